"""The pre-training curves of a run: one row per (pre-train, epoch), as a pandas DataFrame.

Each pre-train of the run's plan contributes the records its worker stored in the cache
(`store.curves`): loss, kNN accuracy (on the epochs it was measured), learning rate, and
seconds (the epoch's own, and the training time so far). Half-done pre-trains give the
epochs they have; `ltsweep report` draws the curves. Imports no torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import yaml

from ltsweep.planning.plan import make_plan
from ltsweep.store.cache import run_cache_dir
from ltsweep.store.curves import read_curve
from ltsweep.store.results import NotARunFolder
from ltsweep.sweep.schema import parse_sweep

COLUMNS = [
    "pretrain_key", "method", "dataset", "gamma", "data_seed", "epochs",
    "epoch", "loss", "knn_acc", "lr", "epoch_seconds", "seconds",
]  # fmt: skip


def load_pretrains(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The per-epoch table of the run's pre-trains (empty if none has run an epoch yet)."""
    frozen = Path(run_dir) / "sweep.yaml"
    if not frozen.is_file():
        raise NotARunFolder(f"{run_dir}: not a run folder (no sweep.yaml in it)")
    sweep = parse_sweep(yaml.safe_load(frozen.read_text()), str(frozen))
    cache = run_cache_dir(run_dir)
    rows = []
    for unit in make_plan(sweep).pretrains:
        epochs, records = read_curve(cache, unit.key)
        before = 0.0
        for r in sorted(records, key=lambda r: r["epoch"]):
            seconds = r["seconds"] if r["seconds"] is not None else float("nan")
            rows.append(
                {
                    "pretrain_key": unit.key,
                    "method": unit.method,
                    "dataset": unit.dataset,
                    "gamma": unit.gamma,
                    "data_seed": unit.data_seed,
                    "epochs": epochs,
                    **{k: r[k] for k in ("epoch", "loss", "knn_acc", "lr")},
                    "epoch_seconds": seconds - before,
                    "seconds": seconds,
                }
            )
            before = seconds
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.astype({"knn_acc": float, "loss": float, "lr": float})
