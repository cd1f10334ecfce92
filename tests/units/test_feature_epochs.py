"""grid.pretrain_epochs: features of intermediate pre-train epochs, and fine-tunes from each."""

from __future__ import annotations

import math

import torch

from ltsweep.planning.plan import make_plan
from ltsweep.store import cache as store
from ltsweep.sweep.schema import parse_sweep
from ltsweep.units.base import RunContext
from ltsweep.units.finetune import group_finetunes, run_finetunes
from ltsweep.units.pretrain import run_pretrain

SWEEP = {
    "name": "fe",
    "data": {"dataset": "digits", "image_size": 8, "test_per_class": 20},
    "backbone": {"width": 4},
    "grid": {
        "ssl": ["simsiam"],
        "gamma": [10],
        "noise": [0.0],
        "losses": ["ce"],
        "pretrain_epochs": [2, 4],
    },
    "ssl": {
        "simsiam": {
            "epochs": 4,
            "batch_size": 64,
            "warmup_epochs": 1,
            "checkpoint_every": 4,
            "proj_hidden": 32,
            "proj_dim": 32,
            "pred_hidden": 16,
            "finetune": {"epochs": 2, "batch_size": 64},
        }
    },
    "execution": {"device": "cpu"},
}


def test_features_and_finetunes_of_each_pretrain_epoch(tmp_path):
    sweep = parse_sweep(SWEEP)
    plan = make_plan(sweep)
    (pre,) = plan.pretrains
    assert pre.feature_epochs == (2, 4) and pre.epochs == 4
    assert sorted(u.pretrain_epochs for u in plan.finetunes) == [2, 4]
    groups = group_finetunes(plan.finetunes, max_size=100)
    assert len(groups) == 2  # the pre-train epoch is part of the group key

    ctx = RunContext(sweep, tmp_path / "run", tmp_path / "cache")
    out = run_pretrain(ctx, pre)
    assert out["epochs"] == 4
    feats = {e: store.load_features(ctx.cache_dir, pre.key, e) for e in (2, 4)}
    assert all(store.features_ready(ctx.cache_dir, pre.key, e) for e in (2, 4))
    assert feats[2]["train"].shape == feats[4]["train"].shape
    assert not torch.equal(feats[2]["train"], feats[4]["train"])  # two epochs, two encoders
    assert torch.equal(feats[2]["train_index"], feats[4]["train_index"])

    for group in groups:
        (unit,) = group
        (row,) = run_finetunes(ctx, group, f"ft-{unit.pretrain_epochs}")
        assert row["status"] == "ok" and row["pretrain_epochs"] == unit.pretrain_epochs
        assert 0.0 <= row["knn_acc"] <= 1.0 and not math.isnan(row["knn_acc"])
        assert row["knn_acc"] == float(feats[unit.pretrain_epochs]["knn_acc"])
        assert 0.0 <= row["acc"] <= 1.0

    from ltsweep import load_results

    df = load_results(ctx.run_dir)
    assert sorted(df["pretrain_epochs"]) == [2, 4]
