"""Pre-training curves: recorded per epoch, read by load_pretrains, status and the resume line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ltsweep
from ltsweep.engine.ray_driver import resumed_pretrains
from ltsweep.planning.plan import make_plan
from ltsweep.store.cache import run_cache_dir
from ltsweep.store.curves import read_curve, write_curve
from ltsweep.sweep.schema import load_sweep
from tests.helpers import ltsweep_cmd


def test_curves_of_a_finished_run_match_its_pretrain_records(tiny_local_run) -> None:
    run_dir, _ = tiny_local_run
    df = ltsweep.load_pretrains(run_dir)
    plan = make_plan(load_sweep(run_dir / "sweep.yaml"))
    assert len(df) == sum(p.epochs for p in plan.pretrains) == 8
    cache = run_cache_dir(run_dir)
    for unit in plan.pretrains:
        meta = json.loads((cache / "pretrain" / unit.key / "meta.json").read_text())
        mine = df[df["pretrain_key"] == unit.key].sort_values("epoch")
        assert list(mine["epoch"]) == list(range(1, unit.epochs + 1))
        np.testing.assert_allclose(mine["loss"], meta["loss_history"])
        measured = mine.dropna(subset=["knn_acc"])
        assert list(measured["epoch"]) == [e for e, _ in meta["knn_history"]]
        np.testing.assert_allclose(measured["knn_acc"], [a for _, a in meta["knn_history"]])
        assert (mine["epoch_seconds"] > 0).all()
        assert mine["seconds"].iloc[-1] == pytest.approx(meta["seconds"], rel=1e-9)
        assert (mine["lr"] > 0).all() and mine["lr"].iloc[0] != mine["lr"].iloc[-1]


def test_a_half_done_pretrain_shows_in_status_and_the_resume_line(tiny_local_run, tmp_path) -> None:
    run_dir, _ = tiny_local_run
    cache = tmp_path / "cache"
    plan = make_plan(load_sweep(run_dir / "sweep.yaml"))
    unit = plan.pretrains[0]
    write_curve(cache, unit.key, 4, [{"epoch": e, "loss": 1.0, "seconds": e} for e in (1, 2, 3)])
    assert read_curve(cache, unit.key)[0] == 4
    line = resumed_pretrains(cache, plan.pretrains)
    assert line == "resuming 1 pre-train stopped at epoch 3 of 4 (each from its last checkpoint)"
    # status of a run folder whose cache holds that curve, and no results yet
    run = tmp_path / "run"
    run.mkdir()
    (run / "sweep.yaml").write_text((run_dir / "sweep.yaml").read_text())
    (run / "run.json").write_text(json.dumps({"sweep": "tiny", "cache_dir": str(cache)}))
    (run / "results").mkdir()
    out = ltsweep_cmd("status", str(run), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"pre-train simsiam gamma {unit.gamma:g} data seed 0: epoch 3 of 4" in out.stdout


def test_a_damaged_curve_reads_as_none(tmp_path: Path) -> None:
    (tmp_path / "pretrain" / "k").mkdir(parents=True)
    (tmp_path / "pretrain" / "k" / "curve.json").write_text("{not json")
    assert read_curve(tmp_path, "k") == (0, [])
