"""Sweeps over a real 3-node SLURM on this one machine (`cluster/start-slurm.sh --nodes 3`).

Each node is a network namespace with its own address, hostname and /tmp; one job of 3 nodes
runs the Ray head and the driver on its first node and Ray workers on the others. Faults are
made for real: a worker node's Ray killed, the head's driver and raylet killed with
`kill -9`, `scontrol requeue`, two sweeps at once, `ltsweep cancel` and a time limit. After
every job, no process of its Ray may be left in any node's namespace.

Skipped, with the reason, unless the running SLURM has the 3 namespaced nodes. Run folders
live under a shared directory (`shared_dir`), not pytest's /tmp: each node has its own /tmp.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

import ltsweep
from ltsweep.engine import ray_node, slurm, sweep_job
from ltsweep.planning.plan import make_plan
from ltsweep.sweep.cluster_profile import load_profile
from ltsweep.sweep.schema import load_sweep
from tests.helpers import REPO, TINY_SWEEP, job_fields, ltsweep_cmd, release_requeued, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
PROFILE = REPO / "cluster" / "local-nodes.yaml"
NODE_EXEC = REPO / "cluster" / "node-exec.sh"
COLUMNS = ["acc", "acc_many", "acc_medium", "acc_few", "actual_noise", "n_train", "knn_acc"]
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


# --- the cluster, its nodes and their processes -------------------------------------------------


def _netns_of(node: str) -> str:
    return f"ltsw-{node}"


def node_pids(node: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", _netns_of(node)], capture_output=True, text=True, timeout=30
    ).stdout
    return [int(p) for p in out.split()]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def job_ray_pids(node: str, job_id: str) -> list[int]:
    """Processes of the job's Ray (any run) in the node's namespace: ltsweep's own finder,
    pointed at the node through one of its processes."""
    pids = node_pids(node)
    return sorted(ray_node.job_ray_pids(job_id, node_of=str(pids[0]))) if pids else []


def ray_left(nodes: list[str], job_id: str) -> dict[str, list[int]]:
    return {n: pids for n in nodes if (pids := job_ray_pids(n, job_id))}


def assert_no_ray_left(nodes: list[str], job_id: str, within_s: float = 30.0) -> None:
    """However the job ended, none of its Ray may stay on any node (the reaper's promise)."""
    deadline = time.monotonic() + within_s
    while (left := ray_left(nodes, job_id)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray of job {job_id} left after the job: {left}"


def kill_job_ray(node: str, job_id: str) -> list[int]:
    pids = job_ray_pids(node, job_id)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


# --- sweeps -----------------------------------------------------------------------------------


@pytest.fixture
def shared_dir(tmp_path: Path) -> Path:
    """A folder every node sees (conftest's tmp_path of a SLURM test)."""
    return tmp_path


def submit(
    sweep_file: Path, run_dir: Path, *extra: str, profile: Path = PROFILE
) -> subprocess.CompletedProcess:
    args = ["run", str(sweep_file), "--run-dir", str(run_dir), "--cluster", str(profile), *extra]
    return ltsweep_cmd(*args, cwd=run_dir.parent)


@contextlib.contextmanager
def running_job(sweep_file: Path, run_dir: Path, **kw: Path) -> Iterator[str]:
    """Submit the sweep; yield its job id; `scancel` it however the test ends (a job that has
    ended ignores that)."""
    assert submit(sweep_file, run_dir, **kw).returncode == 0
    job_id = job_id_of(run_dir)
    try:
        yield job_id
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


def job_id_of(run_dir: Path) -> str:
    return str(slurm.read_record(run_dir)["job_id"])


def wait_for_end(run_dir: Path, timeout_s: float = 900) -> str:
    def ended():
        state = slurm.job_state(run_dir)
        return state if state in ENDED else None

    return wait_until(ended, timeout_s, f"the job of {run_dir} to end", every=2)


def table(run_dir: Path):
    return ltsweep.load_results(run_dir).set_index("unit_key").sort_index()


def rows_on_disk(run_dir: Path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in (run_dir / "results").glob("*.parquet"))


def stored_mtimes(run_dir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (run_dir / "results").glob("*.parquet")}


def three_pretrain_sweep(folder: Path, **extra: object) -> Path:
    """tiny.yaml with three pre-trains (and `extra` top-level blocks), so that the three
    nodes are busy at once and a fault lands while units run."""
    spec = yaml.safe_load(TINY_SWEEP.read_text())
    spec["grid"]["gamma"] = [1, 10, 50]
    spec.update(extra)
    path = folder / "tiny3.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def assert_complete(sweep_file: Path, run_dir: Path) -> None:
    """Every planned fine-tune has exactly one row, and no temporary file is left."""
    plan = make_plan(load_sweep(sweep_file))
    assert set(table(run_dir).index) == {u.key for u in plan.finetunes}
    assert rows_on_disk(run_dir) == len(plan.finetunes), "a row was written twice"
    assert not list(run_dir.rglob(".tmp-*"))


def unit_running_on(node: str, job_id: str) -> bool:
    """A Tune trial of the job is executing in the node's namespace (a reused, idle trial
    actor is titled `ray::ImplicitFunc`; a working one `ray::ImplicitFunc.train`)."""
    return any(
        _cmdline(p).startswith(b"ray::ImplicitFunc.train") for p in job_ray_pids(node, job_id)
    )


# --- the tests --------------------------------------------------------------------------------


def test_three_nodes_give_the_local_rows_and_share_the_work(nodes, shared_dir):
    """tiny.yaml with three pre-trains and a CE baseline per cell: three 1-CPU nodes run three
    units at a time, and the twelve baselines queue longer than a pre-train takes, so more
    than one node writes rows; the table equals a local run's."""
    sweep_file = three_pretrain_sweep(shared_dir, baselines={"methods": ["ce"], "epochs": 3})
    local = ltsweep_cmd(
        "run",
        str(sweep_file),
        "--run-dir",
        str(shared_dir / "local"),
        "--cache-dir",
        str(shared_dir / "local-cache"),
        "--quiet",
        cwd=shared_dir,
    )
    assert local.returncode == 0, local.stderr
    run_dir = shared_dir / "run"
    out = submit(sweep_file, run_dir, "--wait")
    assert out.returncode == 0, out.stderr + out.stdout
    job_id = job_id_of(run_dir)
    assert slurm.job_state(run_dir) == "COMPLETED"
    assert slurm.read_record(run_dir)["hostnames"] == nodes[:3]
    want, got = table(shared_dir / "local"), table(run_dir)
    assert list(got.index) == list(want.index) and rows_on_disk(run_dir) == len(want) == 36
    assert (got["stage"] == "single-stage").sum() == 12
    np.testing.assert_array_equal(got[COLUMNS].to_numpy(), want[COLUMNS].to_numpy())
    hosts = set(got["host"])
    assert hosts <= set(nodes) and len(hosts) >= 2, f"units ran on {hosts}"
    assert_no_ray_left(nodes, job_id)
    status = ltsweep_cmd("status", str(run_dir), cwd=shared_dir)
    assert "COMPLETED" in status.stdout and "requeued" not in status.stdout


def test_a_lost_worker_node_costs_no_row(nodes, shared_dir):
    sweep_file = three_pretrain_sweep(shared_dir)
    run_dir = shared_dir / "run"
    with running_job(sweep_file, run_dir) as job_id:
        victim = wait_until(
            lambda: next((n for n in nodes[1:3] if unit_running_on(n, job_id)), None),
            600,
            "a unit running on a worker node",
        )
        before = stored_mtimes(run_dir)
        killed = kill_job_ray(victim, job_id)
        assert killed
        assert wait_for_end(run_dir) == "COMPLETED"
    assert_complete(sweep_file, run_dir)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()), "a finished unit was redone"
    assert "lost its worker" in (run_dir / "logs" / "driver.log").read_text()
    assert_no_ray_left(nodes, job_id)


def test_a_killed_head_fails_clearly_and_a_new_submission_finishes(nodes, shared_dir):
    sweep_file = three_pretrain_sweep(shared_dir)
    run_dir = shared_dir / "run"
    with running_job(sweep_file, run_dir) as job_id:
        head = nodes[0]
        wait_until(lambda: (run_dir / "results").is_dir() and stored_mtimes(run_dir), 600, "a row")
        before = stored_mtimes(run_dir)
        task = [p for p in node_pids(head) if b"submitit.core._submit" in _cmdline(p)]
        raylet = [p for p in job_ray_pids(head, job_id) if b"raylet" in _cmdline(p).split(b"\0")[0]]
        assert task and raylet
        t_kill = time.monotonic()
        for pid in task + raylet:
            os.kill(pid, signal.SIGKILL)
        state = wait_for_end(run_dir, timeout_s=sweep_job.HEAD_LOST_S + 90)
        # the workers left within their grace time, so the job ended soon after
        assert time.monotonic() - t_kill < sweep_job.HEAD_LOST_S + 60
        assert state in ("FAILED", "COMPLETED", "CANCELLED") or state.startswith("NODE")
    assert_no_ray_left(nodes, job_id)
    status = ltsweep_cmd("status", str(run_dir), cwd=shared_dir)
    assert f"SLURM job {job_id}: {state}" in status.stdout
    if state != "COMPLETED":
        assert "ltsweep run" in status.stdout  # says how to finish what is missing
    again = submit(sweep_file, run_dir, "--wait")
    assert again.returncode == 0, again.stderr + again.stdout
    second = job_id_of(run_dir)
    assert second != job_id and slurm.job_state(run_dir) == "COMPLETED"
    assert_complete(sweep_file, run_dir)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()), "a finished unit was redone"
    assert_no_ray_left(nodes, second)


def test_requeue_of_a_multi_node_job_resumes_and_is_counted(nodes, shared_dir):
    sweep_file = three_pretrain_sweep(shared_dir)
    run_dir = shared_dir / "run"
    with running_job(sweep_file, run_dir) as job_id:
        wait_until(
            lambda: list((shared_dir / ".cache" / "features").rglob("*.json")),
            600,
            "a first pre-train",
        )
        subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, timeout=30)
        wait_until(lambda: job_fields(job_id).get("JobState") == "PENDING", 120, "the requeue")
        assert_no_ray_left(nodes, job_id)  # the killed run's Ray is gone from every node
        before = stored_mtimes(run_dir)
        release_requeued(job_id)
        assert wait_for_end(run_dir) == "COMPLETED"
    assert_complete(sweep_file, run_dir)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()), "a finished unit was redone"
    assert slurm.requeue_count(run_dir) == 1
    status = ltsweep_cmd("status", str(run_dir), cwd=shared_dir)
    assert "requeued 1 time" in status.stdout
    assert_no_ray_left(nodes, job_id)


def test_two_sweeps_at_once_on_the_same_nodes(nodes, tiny_local_run, shared_dir):
    runs = [shared_dir / "a" / "run", shared_dir / "b" / "run"]
    for run_dir in runs:
        run_dir.parent.mkdir()
        assert submit(TINY_SWEEP, run_dir).returncode == 0
    ids = [job_id_of(r) for r in runs]
    try:
        wait_until(
            lambda: all(job_fields(j).get("JobState") == "RUNNING" for j in ids),
            300,
            "both jobs running together",
        )
        assert len({slurm.ray_ports(load_profile(PROFILE), j).gcs for j in ids}) == 2
        states = [wait_for_end(r) for r in runs]
    finally:
        for j in ids:
            subprocess.run(["scancel", j], capture_output=True, timeout=30)
    assert states == ["COMPLETED", "COMPLETED"]
    want = table(tiny_local_run[0])
    for run_dir in runs:
        got = table(run_dir)
        assert list(got.index) == list(want.index) and rows_on_disk(run_dir) == 16
        np.testing.assert_array_equal(got[COLUMNS].to_numpy(), want[COLUMNS].to_numpy())
    for j in ids:
        assert_no_ray_left(nodes, j)


def test_cancel_and_time_limit_leave_no_ray_on_any_node(nodes, shared_dir):
    sweep_file = three_pretrain_sweep(shared_dir)
    run_dir = shared_dir / "cancelled" / "run"
    run_dir.parent.mkdir()
    assert submit(sweep_file, run_dir).returncode == 0
    job_id = job_id_of(run_dir)
    wait_until(lambda: len(ray_left(nodes, job_id)) == 3, 300, "Ray on all three nodes")
    out = ltsweep_cmd("cancel", str(run_dir), cwd=shared_dir)
    assert out.returncode == 0 and f"cancelled SLURM job {job_id}" in out.stdout
    assert wait_for_end(run_dir, 120) == "CANCELLED"
    assert_no_ray_left(nodes, job_id)

    # a one-minute limit that the job cannot requeue past: SLURM ends it. slurmctld checks
    # limits every 30 s, so a signal window of 45 s is always seen before the limit
    profile = yaml.safe_load(PROFILE.read_text())
    profile.update(time_limit=1, max_requeues=0, signal_delay_s=45)
    short = shared_dir / "short.yaml"
    short.write_text(yaml.safe_dump(profile))
    run_dir = shared_dir / "limited" / "run"
    run_dir.parent.mkdir()
    long = yaml.safe_load(sweep_file.read_text())
    long["ssl"]["simsiam"]["epochs"] = 400  # minutes of work: the limit, not the end, stops it
    long_file = shared_dir / "long.yaml"
    long_file.write_text(yaml.safe_dump(long))
    assert submit(long_file, run_dir, profile=short).returncode == 0
    job_id = job_id_of(run_dir)
    # SIGUSR2 came before the limit; with no requeue left, submitit fails the job
    assert wait_for_end(run_dir, 300) in ("TIMEOUT", "FAILED")
    assert_no_ray_left(nodes, job_id)
    assert "gave_up_at" in slurm.read_record(run_dir)  # the time-limit signal came, no requeue


def _worker_tasks(node: str) -> list[int]:
    return [p for p in node_pids(node) if b"submitit.core._submit" in _cmdline(p)]


def _address(node: str) -> str:
    listed = subprocess.run(
        ["bash", str(NODE_EXEC), "--list"], capture_output=True, text=True, timeout=30
    ).stdout
    return dict(line.split()[:2] for line in listed.splitlines() if line.strip())[node]


def test_workers_leave_within_their_grace_when_they_lose_the_head(nodes, shared_dir):
    """Mid-sweep, the head node stops hearing the other nodes (its firewall drops their TCP;
    its SLURM traffic with the controller still flows, so SLURM keeps the job): the workers,
    and their Ray, leave within the stated grace time; once the head hears them again the
    sweep ends complete, the lost units retried on the head."""
    sweep_file = three_pretrain_sweep(shared_dir)
    run_dir = shared_dir / "run"
    head, workers = nodes[0], nodes[1:3]
    rules = [["INPUT", "-i", "eth0", "-p", "tcp", "-s", _address(n), "-j", "DROP"] for n in workers]
    iptables = ["ip", "netns", "exec", _netns_of(head), "iptables"]
    with running_job(sweep_file, run_dir) as job_id:
        try:
            wait_until(
                lambda: any(unit_running_on(n, job_id) for n in workers), 600, "a unit on a worker"
            )
            for rule in rules:
                subprocess.run([*iptables, "-I", *rule], check=True, timeout=30)
            t_cut = time.monotonic()
            grace = sweep_job.HEAD_LOST_S + 3 * sweep_job.WORKER_POLL_S + 15
            wait_until(
                lambda: not any(_worker_tasks(n) or job_ray_pids(n, job_id) for n in workers),
                grace,
                "the workers to leave",
            )
            assert time.monotonic() - t_cut <= grace
            assert slurm.job_state(run_dir) == "RUNNING"  # the head still drives the sweep
        finally:
            for rule in rules:
                subprocess.run([*iptables, "-D", *rule], capture_output=True, timeout=30)
        assert wait_for_end(run_dir) == "COMPLETED"
    logs = "".join(p.read_text() for p in (run_dir / "logs" / "slurm").rglob("*_log.err"))
    assert logs.count("is gone for") + logs.count("this node's Ray died") == 2
    assert_complete(sweep_file, run_dir)
    assert_no_ray_left(nodes, job_id)
