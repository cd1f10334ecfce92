"""What several test modules share: the repository's paths, the `ltsweep` command as a user
runs it, and the waits of the SLURM tests. Imported as `tests.helpers` (fixtures stay in
conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the repository's root (tests/ is one level below it)
REPO = Path(__file__).resolve().parents[1]
#: ../shared beside the checkout (locally and in CI): the paper, the protocol, the test data
SHARED = REPO.parent / "shared"
#: the small files the tests read (tiny.yaml, the pinned keys)
TEST_DATA = REPO / "tests" / "data"
TINY_SWEEP = TEST_DATA / "tiny.yaml"
LOCAL_PROFILE = REPO / "cluster" / "local.yaml"
NODES_PROFILE = REPO / "cluster" / "local-nodes.yaml"
#: where SLURM tests keep their files: the nodes of `cluster/start-slurm.sh --nodes N` each
#: have their own /tmp, so pytest's usual /tmp/pytest-of-*/ is not seen by a job there
SHARED_TMP = Path(os.environ.get("LTSWEEP_TEST_SHARED", "/var/tmp/ltsweep-tests"))


def ltsweep_cmd(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the `ltsweep` command as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "ltsweep.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, every: float = 0.5) -> Any:
    """Poll `check` until it returns something true; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def job_fields(job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, Restarts, ...); empty once SLURM forgot it."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30
    ).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


#: the longest `release_requeued` waits for the controller's messages to resend to drain
AGENT_DRAIN_S = 150.0


def agent_queue_size() -> int:
    """How many messages slurmctld holds to send again (`sdiag`'s "Agent queue size"): one
    to a node that failed to answer, not yet marked DOWN, waits there to be resent later."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        if line.strip().startswith("Agent queue size:"):
            return int(line.split(":", 1)[1])
    return 0


def release_requeued(job_id: str, restarts: int = 1, timeout_s: float = 120.0) -> None:
    """Wait for the job's requeue number `restarts`, and start it at once: a requeued job
    waits PENDING with a begin time 120 s ahead (built into SLURM). The update only holds
    once the job is PENDING (sent while COMPLETING it is overwritten), so it is repeated;
    and it waits 2 s after the requeue, since slurmd refuses a launch whose credential is
    from the same second as the revoked one ("Job credential revoked": the job FAILS).

    Nor is it sent while slurmctld holds messages to resend (for up to `AGENT_DRAIN_S` more):
    the kill of a failed node's step can wait there, and if the node is back when it is
    resent, it kills the step of the same number that the requeued job has started there
    (seen: the head's task killed 17 s into the new run, and the job FAILED). SLURM's own
    hold covers that time; this wait does what the hold would have."""
    deadline = time.monotonic() + timeout_s + AGENT_DRAIN_S
    pending_since: float | None = None
    while time.monotonic() < deadline:
        fields = job_fields(job_id)
        if not fields:
            return
        if int(fields.get("Restarts", "0")) >= restarts:
            state = fields.get("JobState")
            if state == "PENDING":
                pending_since = pending_since or time.monotonic()
                waited = time.monotonic() - pending_since
                drained = waited > AGENT_DRAIN_S or not agent_queue_size()
                if drained and waited >= 2.0:
                    subprocess.run(
                        ["scontrol", "update", f"jobid={job_id}", "StartTime=now"],
                        capture_output=True,
                        timeout=30,
                    )
            elif state != "COMPLETING":
                return
        time.sleep(0.5)
    total_s = timeout_s + AGENT_DRAIN_S
    raise AssertionError(f"job {job_id} was not requeued and restarted within {total_s:.0f}s")
