"""The node check is the first step of every node of a SLURM job, on the real 3-node test
cluster (`cluster/start-slurm.sh --nodes 3`): its lines are in the job's logs for each node,
and a node that fails it fails the job at once, with its line.

Skipped, with the reason, unless the running SLURM has the 3 namespaced nodes. Run folders
live under conftest's tmp_path of a SLURM test, which every node sees.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from ltsweep.engine import slurm
from ltsweep.engine.node_check import CACHE_MARKER
from tests.helpers import NODES_PROFILE, REPO, TINY_SWEEP, ltsweep_cmd

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
NODE_EXEC = REPO / "cluster" / "node-exec.sh"
CHECKS = (
    "torch",
    "driver",
    "gpus",
    "precision",
    "step cpu",
    "cpus",
    "memory",
    "run folder",
    "cache",
)


def job_logs(run_dir: Path) -> str:
    return "".join(p.read_text() for p in (run_dir / "logs" / "slurm").glob("*/*_log.err"))


def test_every_node_of_a_job_logs_its_node_check(nodes, tmp_path):
    run_dir = tmp_path / "run"
    args = ["run", str(TINY_SWEEP), "--cluster", str(NODES_PROFILE), "--run-dir", str(run_dir)]
    out = ltsweep_cmd(*args, "--wait", cwd=tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    assert slurm.job_state(run_dir) == "COMPLETED"
    logs = job_logs(run_dir)
    for node in nodes[:3]:
        for check in CHECKS:
            assert f"node check on {node}: {check:<11} " in logs, (node, check, logs[-3000:])
        assert f"node check on {node}: gpus        note CPU only" in logs
    assert " FAIL " not in logs


def test_a_node_that_sees_another_cache_fails_the_job_at_once(nodes, tmp_path):
    """node2 mounts another filesystem where the cache is (as a node-local disk would be):
    its check fails, the job fails within seconds, and the line says which node and why."""
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    cache.mkdir()
    victim = nodes[1]
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "ltsweep-other-disk", str(cache)]
    subprocess.run([str(NODE_EXEC), victim, *mount], check=True, timeout=30)
    try:
        args = ["run", str(TINY_SWEEP), "--cluster", str(NODES_PROFILE), "--run-dir", str(run_dir)]
        t0 = time.monotonic()
        out = ltsweep_cmd(*args, "--cache-dir", str(cache), "--wait", cwd=tmp_path)
        took = time.monotonic() - t0
    finally:
        subprocess.run([str(NODE_EXEC), victim, "umount", str(cache)], timeout=30)
    assert (cache / CACHE_MARKER).exists()  # made on the submit host
    assert slurm.job_state(run_dir) == "FAILED"
    assert took < 150, f"the job ran on for {took:.0f} s after its node check failed"
    said = f"ltsweep: error: node check failed on {victim}: cache       FAIL not the shared folder"
    assert out.returncode == 1 and said in out.stderr, out.stderr + out.stdout
    assert "Traceback" not in out.stderr
    logs = job_logs(run_dir)
    line = f"node check failed on {victim}: cache       FAIL not the shared folder"
    assert line in logs and f"({CACHE_MARKER} missing here): {cache}" in logs, logs[-3000:]
    assert not list((run_dir / "results").glob("*.parquet"))
