"""The 3-node test cluster comes back whole after everything on it was killed at once, as when
the session or machine that ran it stops mid-test: `cluster/start-slurm.sh` opens the node
firewall that an interrupted test left shut, and cancels the jobs whose processes died with
the old slurmds (SLURM would otherwise keep them on the nodes). A start with the daemons still
up cancels nothing.

Skipped, with the reason, unless the running SLURM has the 3 namespaced nodes.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, job_fields, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
START = ["bash", str(REPO / "cluster" / "start-slurm.sh"), "--nodes", "3"]
SLURM_DIR = Path("/var/tmp/ltsweep-slurm")


def _iptables(node: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", f"ltsw-{node}", "iptables", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _reaches(src: str, dst_address: str, port: int) -> bool:
    probe = f": </dev/tcp/{dst_address}/{port}"
    done = subprocess.run(
        ["ip", "netns", "exec", f"ltsw-{src}", "timeout", "3", "bash", "-c", probe],
        capture_output=True,
        timeout=30,
    )
    return done.returncode == 0


def _address(node: str) -> str:
    return (
        subprocess.run(
            ["scontrol", "-o", "show", "node", node], capture_output=True, text=True, timeout=30
        )
        .stdout.split("NodeAddr=")[1]
        .split()[0]
    )


def _kill_everything(nodes: list[str]) -> None:
    """-9 to every process in the nodes' namespaces (slurmds, job steps, jobs) and to the
    controller: nothing of the cluster is left running, as after a stopped session."""
    pids = []
    for node in nodes:
        out = subprocess.run(
            ["ip", "netns", "pids", f"ltsw-{node}"], capture_output=True, text=True, timeout=30
        ).stdout
        pids += [int(p) for p in out.split()]
    pid_file = SLURM_DIR / "run" / "slurmctld.pid"
    pids.append(int(pid_file.read_text().split()[0]))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_cluster_killed_mid_test_starts_again_whole(nodes):
    victim, other = nodes[2], nodes[0]
    rule = ["INPUT", "-i", "eth0", "-p", "tcp", "-s", _address(other), "-j", "DROP"]
    job_id = subprocess.run(
        ["sbatch", "--parsable", "-N", "3", "-t", "10", "--wrap", "sleep 600"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    try:
        wait_until(lambda: job_fields(job_id).get("JobState") == "RUNNING", 60, "the job to run")
        assert _iptables(victim, "-I", *rule).returncode == 0  # an interrupted test's cut
        assert not _reaches(other, _address(victim), 6818)

        # Daemons up: a start repairs the firewall and leaves the running job alone.
        again = subprocess.run(START, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"{victim}: removing 1 firewall rule(s)" in again.stdout
        assert "cancelling" not in again.stdout
        assert job_fields(job_id).get("JobState") == "RUNNING"
        assert _reaches(other, _address(victim), 6818)

        # Everything killed, the cut made again: the next start opens it and cancels the job.
        assert _iptables(victim, "-I", *rule).returncode == 0
        _kill_everything(nodes)
        restart = subprocess.run(START, capture_output=True, text=True, timeout=300)
        assert restart.returncode == 0, restart.stdout + restart.stderr
        assert f"{victim}: removing 1 firewall rule(s)" in restart.stdout
        assert "cancelling the jobs left from the previous start" in restart.stdout
        assert job_id in restart.stdout
        assert job_fields(job_id).get("JobState") in (None, "CANCELLED")
        states = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=30
        ).stdout.split("\n")
        assert all(line.split()[1] == "idle" for line in states if line.strip()), states
        assert all(_reaches(a, _address(b), 6818) for a in nodes for b in nodes if a != b)
    finally:
        _iptables(victim, "-D", *rule)
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
        subprocess.run(START, capture_output=True, timeout=300)
