"""`ltsweep status` against the real 3-node test cluster (`cluster/start-slurm.sh --nodes 3`)
while one of its nodes is out: SLURM's reason for the wait, the node that is down, and a
finishing command that fits the two nodes that are up. The node is drained rather than set
DOWN: the test cluster returns a DOWN node whose slurmd still answers to service at once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ltsweep.engine import slurm
from tests.helpers import NODES_PROFILE, TINY_SWEEP, ltsweep_cmd, wait_until

pytestmark = pytest.mark.slurm


def _nodes(partition: str) -> list[str]:
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-p", partition, "-o", "%N"], capture_output=True, text=True
    )
    return sorted(set(out.stdout.split()))


def _scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, capture_output=True, timeout=30)


def test_status_of_a_job_pending_on_a_drained_node(slurm_cluster, tmp_path: Path):
    nodes = _nodes(slurm_cluster)
    if len(nodes) < 3:
        pytest.skip(
            f"no 3-node test cluster (nodes {nodes}): bash cluster/start-slurm.sh --nodes 3"
        )
    out_node = nodes[-1]
    run_dir = tmp_path / "run"
    _scontrol("update", f"nodename={out_node}", "state=drain", "reason=ltsweep-test")
    try:
        args = ["run", str(TINY_SWEEP), "--run-dir", str(run_dir), "--cluster", str(NODES_PROFILE)]
        sub = ltsweep_cmd(*args, cwd=tmp_path)
        assert sub.returncode == 0, sub.stderr
        job_id = str(slurm.read_record(run_dir)["job_id"])
        try:
            reason = "Nodes required for job are DOWN, DRAINED"

            def status_with_reason() -> str | None:  # SLURM gives the reason on its next pass
                out = ltsweep_cmd("status", str(run_dir), cwd=tmp_path).stdout
                return out if reason in out else None

            text = wait_until(status_with_reason, 120, "status to show SLURM's reason", every=2)
            assert f"SLURM job {job_id}: PENDING ({reason}" in text
            assert f"nodes down: {out_node}" in text
            assert "2 of the 3 nodes it asks for are up" in text
            assert f"`ltsweep cancel {run_dir}`, then `" in text and "--nodes 2`" in text
            assert ltsweep_cmd("cancel", str(run_dir), cwd=tmp_path).returncode == 0
            wait_until(lambda: slurm.job_state(run_dir) == "CANCELLED", 60, "the cancel")
            text = ltsweep_cmd("status", str(run_dir), cwd=tmp_path).stdout
            assert "the job ended CANCELLED: `" in text and "--nodes 2` finishes" in text
        finally:
            subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
    finally:
        _scontrol("update", f"nodename={out_node}", "state=resume")
