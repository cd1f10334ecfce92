"""ltsweep: sweeps of SSL pre-training + robust fine-tuning on long-tailed, noisy-label data.

Packages by layer, bottom up; a layer imports only from the layers below it:

- `sweep`: what a user writes (the sweep file, the cluster profile) and what it would cost;
- `store`: what is on disk (atomic writes, the run folder and cache, the results table);
- `data`, `models`, `losses`, `augment`, `knn`, `metrics`, `device`, `placement` (where a
  unit runs), `gpu_memory` (its share of the GPU): torch building blocks;
- `train`: the trainers (self-supervised pre-training, the stacked fine-tune, the baselines);
- `units`: the three kinds of unit (pre-train, fine-tune, baseline): key, needs, run;
- `planning`: the plan of a sweep, what of it is stored, the `ltsweep plan` text;
- `engine` (Ray Tune, SLURM), `report` (figures), `cli` and `status` (the `ltsweep` command).

`gpu_probe` (nvidia-smi, no torch) and `version` sit below them all. `lint-imports` checks
the order (the contracts are in pyproject.toml).

`sweep`, `store`, `units` and `planning` import no torch and no ray, so `ltsweep plan`,
`status` and `results` answer at once; a unit imports its trainer when it runs.
`import ltsweep` imports nothing else: `load_results` reads the results table when called.
"""

from ltsweep.version import __version__


def load_results(run_dir, include_failed: bool = False):
    """The results table of a run folder as a pandas DataFrame (see ltsweep.store.results)."""
    from ltsweep.store.results import load_results as _load  # pyarrow: only when called

    return _load(run_dir, include_failed=include_failed)


def load_pretrains(run_dir):
    """The pre-training curves of a run folder as a pandas DataFrame, one row per (pre-train,
    epoch): loss, kNN accuracy, learning rate, seconds (see ltsweep.planning.pretrains)."""
    from ltsweep.planning.pretrains import load_pretrains as _load  # only when called

    return _load(run_dir)


__all__ = ["__version__", "load_pretrains", "load_results"]
