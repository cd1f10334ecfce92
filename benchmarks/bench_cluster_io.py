"""Shared-filesystem traffic of a sweep: measured per unit, multiplied out for a grid.

On a cluster the run folder and the cache are on a filesystem every node sees. What crosses
it per unit:
- a pre-train writes its checkpoints (`last.pt`, every `checkpoint_every` epochs), its
  encoder/projector snapshots at the kept epochs, and one feature file per kept epoch;
- a fine-tune group (one Tune trial) reads one feature file, once, and writes one Parquet
  file of its rows;
- a baseline writes its checkpoints and one Parquet row.

Measured here: a real local run of `tests/data/tiny.yaml` (plus CE and DivideMix baselines)
gives the bytes of every stored file; a feature file is then rebuilt, synthetically, with the
shapes its checksum file records, which shows the file's size is a function of those shapes
alone (within 1 %: the rest is the archive's internal file names). That function, with the
shapes a width-64 encoder gives on CIFAR-100, multiplies the traffic out for every group of
`sweeps/cifar100.yaml`. Checkpoints are multiplied out from the bytes per parameter measured
at width 4, an upper bound at width 64 (fixed parts such as RNG states weigh less there).

    python benchmarks/bench_cluster_io.py          # ~1 minute; writes its RESULTS.md section
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import yaml
from results_md import update_section

from ltsweep.data.imbalance import long_tail_counts
from ltsweep.models.resnet import build_encoder
from ltsweep.planning.plan import make_plan
from ltsweep.sweep.schema import load_sweep
from ltsweep.train.baselines.common import Backbone, Classifier
from ltsweep.train.selfsup.base import build_method
from ltsweep.units.finetune import finetune_groups

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "sweeps" / "cifar100.yaml"


def saved_bytes(tensors: dict[str, torch.Tensor]) -> int:
    buf = io.BytesIO()
    torch.save(tensors, buf)
    return buf.tell()


def feature_file_bytes(shapes: dict[str, list[int]], dtypes: dict[str, torch.dtype]) -> int:
    """The size of a feature file with these tensor shapes, written the way the cache does."""
    return saved_bytes(
        {k: torch.zeros(v, dtype=dtypes.get(k, torch.float32)) for k, v in shapes.items()}
    )


def feature_dtypes(feature_dtype: str) -> dict[str, torch.dtype]:
    dt = getattr(torch, feature_dtype)
    return {
        "train": dt,
        "test": dt,
        "train_labels": torch.int64,
        "test_labels": torch.int64,
        "train_index": torch.int64,
        "knn_acc": torch.float64,
    }


def n_params(module: torch.nn.Module) -> int:
    return sum(t.numel() for t in module.state_dict().values())


def unit_params(sweep, width: int) -> dict[str, int]:
    """Parameters (and buffers) a checkpoint of each unit kind holds at this width."""
    arch, classes = sweep.backbone.arch, sweep.num_classes
    out = {}
    for method in sweep.grid.ssl:
        m = build_method(method, build_encoder(arch, width), sweep.ssl_settings(method))
        out[method] = n_params(m)
    one = n_params(Classifier(Backbone(arch, width, "cifar"), classes))
    out |= {"ce": one, "dividemix": 2 * one, "elr+": 4 * one}  # ELR+: 2 networks, 2 EMA copies
    return out


def measured_run(folder: Path) -> dict:
    """Run tiny.yaml (+ CE and DivideMix baselines) locally; the stored files' bytes."""
    spec = yaml.safe_load((REPO / "tests" / "data" / "tiny.yaml").read_text())
    spec["baselines"] = {"methods": ["ce", "dividemix"], "epochs": 2, "checkpoint_every": 1}
    sweep_file = folder / "tiny-io.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    run, cache = folder / "run", folder / "cache"
    cmd = [sys.executable, "-m", "ltsweep.cli", "run", str(sweep_file), "--run-dir", str(run)]
    subprocess.run([*cmd, "--cache-dir", str(cache), "--quiet"], check=True, capture_output=True)
    sweep = load_sweep(sweep_file)
    feats = []
    for meta in sorted((cache / "features").rglob("epoch-*.json")):
        shapes = json.loads(meta.read_text())["shapes"]
        actual = meta.with_suffix(".pt").stat().st_size
        rebuilt = feature_file_bytes(shapes, feature_dtypes(sweep.execution.feature_dtype))
        feats.append((actual, rebuilt))
    rows = Counter()
    sizes = Counter()
    import pyarrow.parquet as pq

    for f in (run / "results").glob("*.parquet"):
        kind = "baseline" if f.name.startswith("baseline-") else "finetune"
        rows[kind] += pq.read_metadata(f).num_rows
        sizes[kind] += f.stat().st_size
    plan = make_plan(sweep)
    params = unit_params(sweep, sweep.backbone.width)
    per_param = {}  # checkpoint bytes per parameter: weights, optimiser state, RNG, counters
    for p in plan.pretrains:
        per_param["pretrain"] = (cache / "pretrain" / p.key / "last.pt").stat().st_size / params[
            p.method
        ]
    for b in plan.baselines:
        size = (cache / "baseline" / b.key / "last.pt").stat().st_size
        per_param[b.method] = size / params[b.method]
    return {"features": feats, "rows": rows, "parquet_bytes": sizes, "per_param": per_param}


def grid_traffic() -> dict:
    """Per fine-tune group of sweeps/cifar100.yaml: the feature file it reads."""
    sweep = load_sweep(GRID)
    plan = make_plan(sweep)
    groups = finetune_groups(sweep, plan.finetunes)
    dim = build_encoder(sweep.backbone.arch, sweep.backbone.width).feat_dim
    n_test = 10_000
    dtypes = feature_dtypes(sweep.execution.feature_dtype)
    head_shapes: dict[str, dict[str, list[int]]] = {}
    for method in sweep.grid.ssl:
        settings = sweep.ssl_settings(method)
        if settings.finetune.head == "mlp":
            m = build_method(
                method, build_encoder(sweep.backbone.arch, sweep.backbone.width), settings
            )
            head_shapes[method] = {f"head.{k}": list(v.shape) for k, v in m.head_init().items()}
        else:
            head_shapes[method] = {}
    file_bytes: dict[str, int] = {}
    for p in plan.pretrains:
        n_train = sum(long_tail_counts(500, 100, p.gamma))
        shapes = {
            "train": [n_train, dim],
            "test": [n_test, dim],
            "train_labels": [n_train],
            "test_labels": [n_test],
            "train_index": [n_train],
            "knn_acc": [],
        } | head_shapes[p.method]
        file_bytes[p.key] = feature_file_bytes(shapes, dtypes)
    per_group = [file_bytes[g[0].pretrain_key] for g in groups]
    params = unit_params(sweep, sweep.backbone.width)
    bs = sweep.baselines
    return {
        "params": params,
        "pretrain_writes": [
            (p.method, -(-p.epochs // sweep.ssl_settings(p.method).checkpoint_every))
            for p in plan.pretrains
        ],
        "baseline_writes": [
            (b.method, -(-bs.epochs // bs.checkpoint_every)) for b in plan.baselines
        ],
        "pretrains": len(plan.pretrains),
        "finetunes": len(plan.finetunes),
        "baselines": len(plan.baselines),
        "groups": len(groups),
        "dim": dim,
        "feature_files_bytes": sum(file_bytes.values()),
        "group_read_bytes": per_group,
    }


def mb(x: float) -> str:
    return f"{x / 2**20:,.1f} MiB"


def main() -> None:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        run = measured_run(Path(tmp))
    grid = grid_traffic()
    ratios = [a / b for a, b in run["features"]]
    reads = grid["group_read_bytes"]
    rows_ft = run["rows"]["finetune"]
    per_row_ft = run["parquet_bytes"]["finetune"] / rows_ft
    per_row_bl = run["parquet_bytes"]["baseline"] / run["rows"]["baseline"]
    pp, params = run["per_param"], grid["params"]
    pre_ckpt = sum(n * pp["pretrain"] * params[m] for m, n in grid["pretrain_writes"])
    base_ckpt = sum(
        n * pp.get(m, pp["ce"]) * params.get(m, params["ce"]) for m, n in grid["baseline_writes"]
    )
    lines = [
        "## Shared-filesystem traffic per unit, multiplied out for sweeps/cifar100.yaml",
        "",
        f"`python benchmarks/bench_cluster_io.py` ({time.strftime('%Y-%m-%d')}, "
        f"{time.perf_counter() - t0:.0f} s).",
        "",
        "Measured on a local run of tests/data/tiny.yaml with CE and DivideMix baselines:",
        "",
        "| what | measured |",
        "| --- | ---: |",
        f"| feature file, actual / rebuilt from its recorded shapes | "
        f"{min(ratios):.3f}-{max(ratios):.3f} ({len(ratios)} files) |",
        f"| result Parquet per fine-tune row (grouped files) | {per_row_ft / 1024:.1f} KiB |",
        f"| result Parquet per baseline row | {per_row_bl / 1024:.1f} KiB |",
        f"| checkpoint bytes per parameter: SimSiam pre-train (SGD) | "
        f"{run['per_param']['pretrain']:.1f} |",
        f"| checkpoint bytes per parameter: CE / DivideMix baseline (SGD) | "
        f"{run['per_param']['ce']:.1f} / {run['per_param']['dividemix']:.1f} |",
        "",
        f"Multiplied out for `sweeps/cifar100.yaml` (width {load_sweep(GRID).backbone.width}: "
        f"{grid['dim']}-d features, fp32; {grid['pretrains']} pre-trains, {grid['finetunes']:,} "
        f"fine-tunes in {grid['groups']} Tune trials, {grid['baselines']:,} baselines):",
        "",
        "| what | bytes |",
        "| --- | ---: |",
        f"| one feature file (gamma 1 ... 10) | {mb(min(reads))} ... {mb(max(reads))} |",
        f"| all feature files written (once per pre-train) | {mb(grid['feature_files_bytes'])} |",
        f"| read by all fine-tune groups (one file per group) | {mb(sum(reads))} |",
        f"| read per fine-tune trial, on average | {mb(sum(reads) / grid['finetunes'])} |",
        f"| result rows written (fine-tunes + baselines) | "
        f"{mb(per_row_ft * grid['finetunes'] + per_row_bl * grid['baselines'])} |",
        f"| pre-train checkpoints (`last.pt` every `checkpoint_every` epochs; SimSiam's "
        f"bytes per parameter for all four) | {mb(pre_ckpt)} |",
        f"| baseline checkpoints (every `checkpoint_every` = {load_sweep(GRID).baselines.checkpoint_every}"
        f" epochs; other methods at CE's rate) | {mb(base_ckpt)} |",
    ]
    text = "\n".join(lines)
    print(text)
    update_section("cluster-io", text)


if __name__ == "__main__":
    main()
