"""Worker jobs on the real 3-node test cluster (`cluster/start-slurm.sh --nodes 3`): the sweep's
job is one node (Ray head and driver), and one-node worker jobs join its Ray cluster.

`cluster/local-workers.yaml` asks for 4 GB a job, so each job has a node of its own.
Skipped, with the reason, unless the running SLURM has the 3 namespaced nodes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from ltsweep.engine import slurm, slurm_nodes
from ltsweep.engine.slurm_record import read_workers
from tests.helpers import REPO, job_fields, ltsweep_cmd, wait_until
from tests.integration.slurm.test_multi_node_sweeps import (
    COLUMNS,
    assert_complete,
    assert_no_ray_left,
    job_id_of,
    node_pids,
    rows_on_disk,
    submit,
    table,
    three_pretrain_sweep,
    unit_running_on,
    wait_for_end,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
PROFILE = REPO / "cluster" / "local-workers.yaml"


def _tasks(array_id: str) -> dict[str, tuple[str, str]]:
    """{task id (123_0): (state, node)} of a worker array, as squeue shows it now."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-j", array_id, "-o", "%i %T %N"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return {f[0]: (f[1], f[2] if len(f) > 2 else "") for f in map(str.split, out.splitlines()) if f}


def _busy_task(array_id: str, nodes: list[str], what: str) -> tuple[str, str]:
    """(task, node) of a worker task that runs a unit, once one does."""
    return wait_until(
        lambda: next(
            (
                (task, node)
                for task, (state, node) in _tasks(array_id).items()
                if state == "RUNNING" and node in nodes and unit_running_on(node, task)
            ),
            None,
        ),
        600,
        what,
    )


def _worker_log(run_dir: Path, task: str) -> str:
    files = (run_dir / "logs" / "slurm" / task).glob("*_log.out")
    return "".join(p.read_text() for p in files)


def test_a_head_job_and_two_worker_jobs_give_the_local_rows(nodes, tmp_path):
    """Three pre-trains and twelve baselines: the head's node and two worker jobs share the
    units; one worker job is cancelled while it runs a unit, which is then done elsewhere,
    once. The table equals a local run's, and no Ray of any of the jobs is left."""
    sweep_file = three_pretrain_sweep(tmp_path, baselines={"methods": ["ce"], "epochs": 3})
    local = ltsweep_cmd(
        *("run", str(sweep_file), "--run-dir", str(tmp_path / "local")),
        *("--cache-dir", str(tmp_path / "local-cache"), "--quiet"),
        cwd=tmp_path,
    )
    assert local.returncode == 0, local.stderr
    run_dir = tmp_path / "run"
    submitted = submit(sweep_file, run_dir, profile=PROFILE)
    assert submitted.returncode == 0, submitted.stderr
    job_id = job_id_of(run_dir)
    (workers,) = read_workers(run_dir)
    array_id = workers["job_id"]
    assert f"job {job_id} and 2 worker job(s) (array {array_id})" in submitted.stdout
    assert workers["tasks"] == 2 and workers["for_job"] == job_id
    try:
        task, _ = _busy_task(array_id, nodes, "a unit running in a worker job")
        status = ltsweep_cmd("status", str(run_dir), cwd=tmp_path)
        assert "worker jobs: " in status.stdout and "running" in status.stdout, status.stdout
        subprocess.run(["scancel", task], check=True, timeout=30)
        assert wait_for_end(run_dir) == "COMPLETED"
    finally:
        subprocess.run(["scancel", job_id, array_id], capture_output=True, timeout=30)
    want, got = table(tmp_path / "local"), table(run_dir)
    assert list(got.index) == list(want.index) and rows_on_disk(run_dir) == len(want) == 36
    np.testing.assert_array_equal(got[COLUMNS].to_numpy(), want[COLUMNS].to_numpy())
    hosts = set(got["host"])
    assert hosts <= set(nodes) and len(hosts) >= 2, f"units ran on {hosts}"
    assert not list(run_dir.rglob(".tmp-*"))
    assert "lost its worker" in (run_dir / "logs" / "driver.log").read_text()
    wait_until(lambda: not _tasks(array_id), 120, "the worker jobs to end")
    for job in (job_id, f"{array_id}_0", f"{array_id}_1"):
        assert_no_ray_left(nodes, job)
    other = f"{array_id}_{1 - int(task.split('_')[1])}"
    assert "leaves: " in _worker_log(run_dir, other)
    assert all(node_pids(n) for n in nodes)  # the nodes themselves are untouched


def test_worker_jobs_after_the_sweep_ended_are_refused_or_leave_at_once(nodes, tmp_path):
    """`ltsweep workers` on a finished sweep is refused in one line; worker jobs that start
    after the sweep's job ended (queued behind it) leave at once, without joining."""
    sweep_file = three_pretrain_sweep(tmp_path)
    run_dir = tmp_path / "run"
    done = submit(sweep_file, run_dir, "--wait", profile=REPO / "cluster" / "local-nodes.yaml")
    assert done.returncode == 0, done.stderr
    refused = ltsweep_cmd("workers", str(run_dir), "--jobs", "2", cwd=tmp_path)
    assert refused.returncode == 2
    assert "is COMPLETED: worker jobs would have nothing to join" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    job_id = job_id_of(run_dir)
    array_id = slurm.submit_workers(run_dir, 2, for_job=job_id)  # as if queued before the end
    wait_until(lambda: not _tasks(array_id), 120, "the late worker jobs to end")
    for task in (f"{array_id}_0", f"{array_id}_1"):
        log = _worker_log(run_dir, task)
        assert f"leaves at once: the sweep's job {job_id} is COMPLETED" in log, log
        assert "joining the Ray head" not in log and "node check" not in log


def test_a_worker_job_at_its_time_limit_leaves_and_is_not_requeued(nodes, tmp_path):
    """A worker job runs a unit when its time limit comes: it stops its Ray and is not
    requeued (submitit: timed out, not checkpointable). What it ran is retried on the sweep
    job's node, and the sweep ends COMPLETED with every row.

    SLURM may send the warning signal up to a minute before `signal_delay_s` says, so a
    worker submitted with a one-minute limit can be warned before it has joined. The limit
    is therefore cut to one minute (`scontrol update`) only once the worker runs a unit:
    SLURM then signals it at its next pass, or kills it with the limit."""
    sweep_file = three_pretrain_sweep(tmp_path)
    spec = yaml.safe_load(sweep_file.read_text())
    spec["ssl"]["simsiam"]["epochs"] = 300  # a pre-train outlasts the worker's last minute
    sweep_file.write_text(yaml.safe_dump(spec))
    profile = yaml.safe_load(PROFILE.read_text())
    profile.update(worker_jobs=1, worker_time_limit=10, signal_delay_s=20)
    profile_file = tmp_path / "short-workers.yaml"
    profile_file.write_text(yaml.safe_dump(profile))
    run_dir = tmp_path / "run"
    assert submit(sweep_file, run_dir, profile=profile_file).returncode == 0
    job_id = job_id_of(run_dir)
    array = read_workers(run_dir)[0]["job_id"]  # one task: SLURM names it by the array's id
    task = array
    try:
        task, _ = _busy_task(array, nodes, "a unit running in the worker job")
        subprocess.run(
            ["scontrol", "update", f"jobid={task}", "TimeLimit=1"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait_until(lambda: task not in _tasks(array), 300, "the worker's time limit")
        assert slurm.job_state(run_dir) == "RUNNING"  # the sweep goes on without it
        assert wait_for_end(run_dir) == "COMPLETED"
    finally:
        subprocess.run(["scancel", job_id, task], capture_output=True, timeout=30)
    assert job_fields(task).get("Restarts", "0") == "0"  # SLURM still knows it: not requeued
    log = "".join(p.read_text() for p in (run_dir / "logs" / "slurm" / task).glob("*_log.*"))
    assert "joining the Ray head" in log
    if "Caught signal SIGUSR2" in log:  # else SLURM's pass sent the signal with the kill
        assert "this job is timed-out" in log and "Job not requeued because: timed-out" in log
        assert "leaves at its time limit (not requeued)" in log
    assert slurm_nodes.job_state_now(task) in ("TIMEOUT", "FAILED")
    assert_complete(sweep_file, run_dir)
    for job in (job_id, task):
        assert_no_ray_left(nodes, job)
