"""The whole slice on a local Ray, driven through the `ltsweep` command as a user would."""

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import ltsweep
from ltsweep.engine.local_ray import local_ray_id
from ltsweep.engine.ray_node import job_ray_pids
from ltsweep.planning.plan import make_plan
from ltsweep.sweep.schema import load_sweep
from tests.helpers import TINY_SWEEP, ltsweep_cmd, wait_until

TINY = TINY_SWEEP
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tiny_local_run):
    return tiny_local_run


def test_run_fills_the_table(finished_run):
    run_dir, done = finished_run
    plan = make_plan(load_sweep(TINY))
    df = ltsweep.load_results(run_dir)
    assert len(df) == len(plan.finetunes) == 16
    assert set(df["unit_key"]) == {u.key for u in plan.finetunes}
    assert (df["status"] == "ok").all() and (df["stage"] == "two-stage").all()
    assert df["acc"].between(0, 1).all() and df["knn_acc"].between(0, 1).all()
    assert df["acc"].mean() > 0.2  # well above chance (0.1) on digits even with 70 % noise cells
    # actual noise: 0 at rate 0; about 0.7 * 9/10 at rate 0.7 (a few hundred samples)
    assert (df.loc[df["noise"] == 0, "actual_noise"] == 0).all()
    assert df.loc[df["noise"] == 0.7, "actual_noise"].between(0.5, 0.75).all()
    # the long-tail subset: gamma 10 has fewer samples; heads switch above SimSiam's 60 % threshold
    assert (
        df.loc[df["gamma"] == 10, "n_train"].iloc[0] < df.loc[df["gamma"] == 1, "n_train"].iloc[0]
    )
    assert set(df.loc[df["noise"] == 0.7, "head"]) == {"last"} and set(
        df.loc[df["noise"] == 0, "head"]
    ) == {"full"}
    assert all(len(c) == 10 for c in df["class_acc"])
    for _, row in df.iterrows():  # acc is the class-balanced mean on the balanced test set
        assert row["acc"] == pytest.approx(np.mean(row["class_acc"]), abs=1e-9)
    assert "accuracy (%)" in done.stdout and "la+sl" in done.stdout
    assert "pretrain 2/2 done" in done.stderr and "finetune 16/16 done" in done.stderr


def test_rerun_adds_no_row_and_says_so(finished_run, tmp_path):
    run_dir, _ = finished_run
    files = sorted(p.name for p in (run_dir / "results").iterdir())
    again = ltsweep_cmd("run", str(TINY), "--run-dir", str(run_dir), cwd=run_dir.parent)
    assert again.returncode == 0
    assert "nothing to do: all 16 results" in again.stderr
    assert sorted(p.name for p in (run_dir / "results").iterdir()) == files
    assert len(ltsweep.load_results(run_dir)) == 16


def test_status_and_results_commands(finished_run):
    run_dir, _ = finished_run
    status = ltsweep_cmd("status", str(run_dir), cwd=run_dir.parent)
    assert status.returncode == 0
    assert "pretrain        2        0       0       0       2" in status.stdout
    assert "finetune       16        0       0       0      16" in status.stdout
    results = ltsweep_cmd("results", str(run_dir), cwd=run_dir.parent)
    assert "70%" in results.stdout and "simsiam" in results.stdout


def session_pids(sid: int) -> list[int]:
    """The live processes of session `sid` (a driver started with start_new_session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_killed_run_resumes_to_the_same_rows(finished_run, tmp_path, how):
    """Killed mid-sweep, after the first pre-train checkpoint, while that pre-train trains:
    kill -9 of the whole process group, or a plain `kill` (SIGTERM) or Ctrl-C (SIGINT) of the
    driver, which stops cleanly (exit 130, no traceback, one message for both). No process of
    the driver's local Ray outlives it. Run again: exactly the same table."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ltsweep.cli", "run", str(TINY), "--run-dir", str(run_dir)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    ray_id = local_ray_id(proc.pid)
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / ".cache" / "pretrain").glob("*/last.pt")):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert job_ray_pids(ray_id), "the driver's local Ray is not under its own temp dir"
        if how != "SIGKILL":
            proc.send_signal(getattr(signal, how))
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 130, err
            assert "Traceback" not in err, err
            assert (
                f"ltsweep: interrupted; everything stored in {run_dir} is kept; "
                "run the same command again to finish what is left"
            ) in err, err
    finally:
        with contextlib.suppress(ProcessLookupError):  # the driver and its process group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    wait_until(lambda: not job_ray_pids(ray_id), 60, f"the Ray of killed driver {ray_id} to stop")
    # also its workers that no longer name its Ray (adopted by init when their raylet died):
    # every process of the driver's session
    wait_until(lambda: not session_pids(proc.pid), 60, f"every process of driver {proc.pid} to end")
    assert len(ltsweep.load_results(run_dir)) < 16
    resumed = ltsweep_cmd("run", str(TINY), "--run-dir", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr

    want = ltsweep.load_results(finished_run[0]).set_index("unit_key").sort_index()
    got = ltsweep.load_results(run_dir).set_index("unit_key").sort_index()
    assert list(got.index) == list(want.index)  # no missing and no duplicate row
    rows = sum(pq.read_metadata(f).num_rows for f in (run_dir / "results").glob("*.parquet"))
    assert rows == 16
    cols = ["acc", "acc_many", "acc_medium", "acc_few", "actual_noise", "n_train", "knn_acc"]
    np.testing.assert_array_equal(got[cols].to_numpy(), want[cols].to_numpy())
    assert not list(run_dir.rglob(".tmp-*")) and not list((tmp_path / ".cache").rglob(".tmp-*"))


def test_corrupt_feature_cache_is_moved_aside_and_recomputed(finished_run, tmp_path):
    """A truncated feature file: one line naming it and where it went, recomputed, no stored
    result touched."""
    import shutil

    src = finished_run[0].parent
    shutil.copytree(src / ".cache", tmp_path / ".cache")
    shutil.copytree(finished_run[0], tmp_path / "run")
    (tmp_path / "run" / "run.json").write_text(
        (tmp_path / "run" / "run.json")
        .read_text()
        .replace(str((src / ".cache").resolve()), str((tmp_path / ".cache").resolve()))
    )
    victim = next((tmp_path / ".cache" / "features").rglob("*.pt"))
    victim.write_bytes(victim.read_bytes()[:100])
    shutil.rmtree(tmp_path / ".cache" / "rows")  # or the removed rows are reused from there
    for f in (tmp_path / "run" / "results").glob(
        "*.parquet"
    ):  # make the fine-tunes of that pre-train to-do
        if victim.parent.name[:8] in f.name:
            f.unlink()
    before = sorted(p.name for p in (tmp_path / "run" / "results").iterdir())
    out = ltsweep_cmd("run", str(TINY), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    said = [line for line in out.stderr.splitlines() if str(victim) in line]
    assert len(said) == 1 and "corrupt" in said[0] and "moved to" in said[0], out.stderr
    assert list((tmp_path / ".cache" / ".quarantine").iterdir())
    assert set(before) <= {p.name for p in (tmp_path / "run" / "results").iterdir()}
    assert len(ltsweep.load_results(tmp_path / "run")) == 16
    assert math.isfinite(ltsweep.load_results(tmp_path / "run")["acc"].sum())
