"""A node of a running 3-node sweep job dies whole (every process of its namespace, its slurmd
included, killed with -9, as when a machine fails): with the profile's `no_kill` (the
default) SLURM keeps the job on the two nodes left, Tune retries the lost node's unit there,
and the job ends COMPLETED with the rows of a local run. Afterwards the node's slurmd is
started again (`cluster/start-slurm.sh` restarts a dead one), so the cluster is whole.

Skipped, with the reason, unless the running SLURM has the 3 namespaced nodes.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ltsweep
from ltsweep.engine import ray_node, slurm
from ltsweep.engine.slurm_nodes import node_states, usable
from tests.helpers import (
    NODES_PROFILE,
    REPO,
    TINY_SWEEP,
    job_fields,
    ltsweep_cmd,
    release_requeued,
    wait_until,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
COLUMNS = ["acc", "acc_many", "acc_medium", "acc_few", "actual_noise", "n_train", "knn_acc"]
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def _pids(node: str) -> list[int]:
    out = subprocess.run(
        ["ip", "netns", "pids", f"ltsw-{node}"], capture_output=True, text=True, timeout=30
    ).stdout
    return [int(p) for p in out.split()]


def _ray_pids(node: str, job_id: str) -> list[int]:
    pids = _pids(node)
    return sorted(ray_node.job_ray_pids(job_id, node_of=str(pids[0]))) if pids else []


def _runs_a_unit(node: str, job_id: str) -> bool:
    def title(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    return any(title(p).startswith(b"ray::ImplicitFunc.train") for p in _ray_pids(node, job_id))


def _restore(node: str) -> None:
    """Start the node's slurmd again and wait until SLURM takes jobs there."""
    subprocess.run(
        ["bash", str(REPO / "cluster" / "start-slurm.sh"), "--nodes", "3"],
        capture_output=True,
        timeout=300,
    )
    wait_until(lambda: usable(node_states().get(node, "down*")), 120, f"{node} back in service")


def test_a_node_lost_mid_sweep_is_survived_in_place(nodes, tiny_local_run, tmp_path):
    run_dir = tmp_path / "run"
    args = ["run", str(TINY_SWEEP), "--run-dir", str(run_dir), "--cluster", str(NODES_PROFILE)]
    assert ltsweep_cmd(*args, cwd=tmp_path).returncode == 0
    job_id = str(slurm.read_record(run_dir)["job_id"])
    victim = None
    try:
        victim = wait_until(
            lambda: next((n for n in nodes[1:3] if _runs_a_unit(n, job_id)), None),
            600,
            "a unit running on a worker node",
        )
        for pid in _pids(victim):  # the whole machine: its slurmd, task, Ray and reaper
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        def ended() -> str | None:
            state = slurm.job_state(run_dir)
            return state if state in ENDED else None

        assert wait_until(ended, 900, "the job to end", every=2) == "COMPLETED"
        # SLURM kept the job and dropped the node from it (its last record: the nodes left)
        last = subprocess.run(
            ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,NodeList"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()[-1]
        state, nodelist = last.split("|")
        kept = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True
        ).stdout.split()
        assert state == "COMPLETED" and victim not in kept and len(kept) == 2, last
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
        if victim is not None:
            _restore(victim)
    want = ltsweep.load_results(tiny_local_run[0]).set_index("unit_key").sort_index()
    got = ltsweep.load_results(run_dir).set_index("unit_key").sort_index()
    assert list(got.index) == list(want.index) and len(got) == 16
    np.testing.assert_array_equal(got[COLUMNS].to_numpy(), want[COLUMNS].to_numpy())
    assert "lost its worker" in (run_dir / "logs" / "driver.log").read_text()

    def ray_left() -> dict[str, list[int]]:
        return {n: p for n in nodes if (p := _ray_pids(n, job_id))}

    wait_until(lambda: not ray_left(), 30, f"no Ray of job {job_id} on any node")


def test_a_lost_head_node_requeues_the_job(nodes, tiny_local_run, tmp_path):
    """The first node (Ray head, driver, batch script) dies whole: under no_kill SLURM would
    keep the job running headless; a leaving worker's watcher requeues it once SLURM drops
    that node. While it waits, status names the node that is down and offers `--nodes 2`;
    with the node back, the requeued job finishes the sweep."""
    run_dir = tmp_path / "run"
    args = ["run", str(TINY_SWEEP), "--run-dir", str(run_dir), "--cluster", str(NODES_PROFILE)]
    assert ltsweep_cmd(*args, cwd=tmp_path).returncode == 0
    job_id = str(slurm.read_record(run_dir)["job_id"])
    head = nodes[0]
    restored = False
    try:
        wait_until(lambda: any(_runs_a_unit(n, job_id) for n in nodes), 600, "a running unit")
        for pid in _pids(head):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(
            lambda: int(job_fields(job_id).get("Restarts", "0")) >= 1, 420, "the job's requeue"
        )
        watch_logs = (run_dir / "logs" / "slurm" / job_id).glob("head-watch.*.log")
        assert any("requeueing" in p.read_text() for p in watch_logs)
        wait_until(lambda: job_fields(job_id).get("JobState") == "PENDING", 120, "it to pend")
        text = ltsweep_cmd("status", str(run_dir), cwd=tmp_path).stdout
        assert f"SLURM job {job_id}: PENDING" in text and f"nodes down: {head}" in text
        assert "--nodes 2` finishes" in text
        _restore(head)
        restored = True
        release_requeued(job_id)

        def ended() -> str | None:
            state = slurm.job_state(run_dir)
            return state if state in ENDED else None

        assert wait_until(ended, 900, "the requeued job to end", every=2) == "COMPLETED"
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
        if not restored:
            _restore(head)
    want = ltsweep.load_results(tiny_local_run[0]).set_index("unit_key").sort_index()
    got = ltsweep.load_results(run_dir).set_index("unit_key").sort_index()
    assert list(got.index) == list(want.index) and len(got) == 16
    np.testing.assert_array_equal(got[COLUMNS].to_numpy(), want[COLUMNS].to_numpy())
    wait_until(lambda: not any(_ray_pids(n, job_id) for n in nodes), 30, f"no Ray of job {job_id}")
