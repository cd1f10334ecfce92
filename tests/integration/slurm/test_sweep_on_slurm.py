"""A real sweep through `ltsweep run --cluster` on the single-node SLURM of cluster/start-slurm.sh."""

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

import ltsweep
from ltsweep.engine import slurm
from ltsweep.planning.plan import make_plan
from ltsweep.sweep.schema import load_sweep
from tests.helpers import REPO, TINY_SWEEP, job_fields, ltsweep_cmd, release_requeued, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
PROFILE = REPO / "cluster" / "local.yaml"
COLUMNS = ["acc", "acc_many", "acc_medium", "acc_few", "actual_noise", "n_train", "knn_acc"]


def _table(run_dir: Path):
    return ltsweep.load_results(run_dir).set_index("unit_key").sort_index()


def _rows_on_disk(run_dir: Path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in (run_dir / "results").glob("*.parquet"))


def _submit(sweep_file: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """`ltsweep run SWEEP --run-dir RUN --cluster <the test profile> EXTRA...`, from run_dir's parent."""
    args = ["run", str(sweep_file), "--run-dir", str(run_dir), "--cluster", str(PROFILE), *extra]
    return ltsweep_cmd(*args, cwd=run_dir.parent)


def _wait_for_end(run_dir: Path, timeout_s: float = 600) -> str:
    def ended():
        state = slurm.job_state(run_dir)
        return state if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") else None

    return wait_until(ended, timeout_s, "the sweep job to end", every=2)


def test_sweep_on_slurm_gives_the_rows_of_the_local_run(slurm_cluster, tiny_local_run, tmp_path):
    run_dir = tmp_path / "run"
    out = _submit(TINY_SWEEP, run_dir, "--wait")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "submitted SLURM job" in out.stdout
    assert slurm.job_state(run_dir) == "COMPLETED"
    want, got = _table(tiny_local_run[0]), _table(run_dir)
    assert list(got.index) == list(want.index) and _rows_on_disk(run_dir) == 16
    np.testing.assert_array_equal(got[COLUMNS].to_numpy(), want[COLUMNS].to_numpy())
    status = ltsweep_cmd("status", str(run_dir), cwd=tmp_path)
    assert "SLURM job" in status.stdout and "COMPLETED" in status.stdout


def test_requeued_sweep_finishes_without_redoing_or_duplicating(slurm_cluster, tmp_path):
    """`scontrol requeue` after the first pre-train: the requeued job resumes from the run folder."""
    spec = yaml.safe_load(TINY_SWEEP.read_text())
    spec["grid"]["gamma"] = [1, 10, 50]  # three pre-trains on two CPUs: a requeue lands mid-sweep
    sweep_file = tmp_path / "tiny3.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "run"
    out = _submit(sweep_file, run_dir)
    assert out.returncode == 0, out.stderr
    job_id = slurm.read_record(run_dir)["job_id"]
    try:
        wait_until(
            lambda: list((tmp_path / ".cache" / "features").rglob("*.json")),
            300,
            "a first pre-train",
        )
        subprocess.run(
            ["scontrol", "requeue", str(job_id)], check=True, capture_output=True, timeout=30
        )
        wait_until(lambda: job_fields(str(job_id)).get("JobState") == "PENDING", 120, "the requeue")
        # nothing runs now: what is stored at this point must survive untouched
        stored = {
            p: p.stat().st_mtime_ns
            for p in [
                *(run_dir / "results").glob("*.parquet"),
                *(tmp_path / ".cache").rglob("meta.json"),
                *(tmp_path / ".cache" / "features").rglob("*.pt"),
            ]
        }
        assert any(p.suffix == ".pt" for p in stored)
        release_requeued(str(job_id))
        assert _wait_for_end(run_dir) == "COMPLETED"
    finally:
        subprocess.run(["scancel", str(job_id)], capture_output=True, timeout=30)
        slurm.stop_job_ray(str(job_id))
    plan = make_plan(load_sweep(sweep_file))
    table = _table(run_dir)
    assert set(table.index) == {u.key for u in plan.finetunes} and _rows_on_disk(run_dir) == len(
        plan.finetunes
    )
    assert all(p.stat().st_mtime_ns == t for p, t in stored.items()), "a finished unit was redone"
    assert slurm.read_record(run_dir)["restart_count"] == 1
    assert not list(run_dir.rglob(".tmp-*"))


def test_cancel_keeps_what_was_stored(slurm_cluster, tmp_path):
    run_dir = tmp_path / "run"
    assert _submit(TINY_SWEEP, run_dir).returncode == 0
    job_id = slurm.read_record(run_dir)["job_id"]
    try:
        wait_until(
            lambda: list((tmp_path / ".cache" / "pretrain").rglob("last.pt")),
            300,
            "a first checkpoint",
        )
        before = {
            p: p.stat().st_mtime_ns
            for p in tmp_path.rglob("*")
            if p.is_file() and ".cache" in p.parts
        }
        out = ltsweep_cmd("cancel", str(run_dir), cwd=tmp_path)
        assert out.returncode == 0 and f"cancelled SLURM job {job_id}" in out.stdout
        wait_until(lambda: slurm.job_state(run_dir) == "CANCELLED", 120, "the cancellation")
    finally:
        slurm.stop_job_ray(str(job_id))
    time.sleep(1)
    for p in before:
        assert p.exists(), f"{p} was deleted by cancel"
    assert (run_dir / "sweep.yaml").is_file() and os.path.isdir(run_dir / "results")
    resumed = ltsweep_cmd(
        "run", str(TINY_SWEEP), "--run-dir", str(run_dir), cwd=tmp_path
    )  # finish locally
    assert resumed.returncode == 0, resumed.stderr
    assert len(ltsweep.load_results(run_dir)) == 16
