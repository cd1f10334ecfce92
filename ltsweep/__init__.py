"""ltsweep: sweeps of SSL pre-training + robust fine-tuning on long-tailed, noisy-label data."""

__version__ = "0.1.0"


def load_results(run_dir, include_failed: bool = False):
    """The results table of a run folder as a pandas DataFrame (see ltsweep.results)."""
    from ltsweep.store.results import load_results as _load

    return _load(run_dir, include_failed=include_failed)


__all__ = ["__version__", "load_results"]
