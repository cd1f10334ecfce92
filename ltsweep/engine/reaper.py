"""A job's Ray never outlives the SLURM task that started it, however the task ends.

`ray start` daemonises: its GCS, raylet, dashboard and agents leave the task's process tree,
so SLURM does not stop them when the task ends unless the site tracks processes with
cgroups (the test cluster's proctrack/linuxproc does not, and ltsweep must not rely on it).
A task that ends normally stops its Ray itself; one that is killed (`scancel`, a requeue,
the time limit, `kill -9`) cannot. So each task first starts a reaper: a small process that
detaches from the task the same way Ray does (a double fork), waits for the task to die,
and then stops exactly that run's Ray on this node (`ray_node.stop_job_ray`).

The Ray processes are found by the temp dir on their command line and by descent from them,
which is not enough once the task is gone: a worker renames itself `ray::...`, and when its
raylet dies with the task (a `kill -9` of the task's process group kills them together) the
worker is adopted by init and names nothing of its run, yet trains on for seconds and may
write into the cache a later run of the same sweep is using. So while it waits, the reaper
remembers every process of the run it has seen (pid and start time), and at the end stops
those still alive as well as those it finds then.

    python -m ltsweep.engine.reaper JOB_ID RESTART TASK_PID
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ltsweep.engine.ray_node import job_ray_pids, stop_job_ray

_POLL_S = 0.5
#: how often the run's processes are looked up while the task lives (a read of all of /proc)
_SCAN_S = 1.0


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None if it
    is gone: with the pid it names one process even if the pid is reused."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def spawn_reaper(job_id: str, restart: int, log_path: Path) -> None:
    """Start the reaper of this task (the calling process); returns once it has detached."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        subprocess.run(
            [sys.executable, "-m", "ltsweep.engine.reaper", job_id, str(restart), str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            check=True,
            timeout=60,
        )


def watch(job_id: str, restart: int, task_pid: int) -> int:
    """Wait for the task to end, then stop its run's Ray here; return how many processes."""
    born = process_start_time(task_pid)
    seen: dict[int, str] = {}  # pid -> start time of every process of the run seen so far
    scanned = float("-inf")
    while born is not None and process_start_time(task_pid) == born:
        if time.monotonic() - scanned >= _SCAN_S:
            seen = _still_running(seen) | _started(job_ray_pids(job_id, restart))
            scanned = time.monotonic()
        time.sleep(_POLL_S)
    return stop_job_ray(job_id, restart=restart, also=_still_running(seen))


def _started(pids: set[int]) -> dict[int, str]:
    return {pid: t for pid in pids if (t := process_start_time(pid)) is not None}


def _still_running(seen: dict[int, str]) -> dict[int, str]:
    """The processes of `seen` that still run: same pid, same start time (not a reused pid)."""
    return {pid: t for pid, t in seen.items() if process_start_time(pid) == t}


def main(argv: list[str]) -> int:
    job_id, restart, task_pid = argv[0], int(argv[1]), int(argv[2])
    if os.fork() > 0:  # the parent returns at once; the child is adopted by init
        return 0
    os.setsid()
    stopped = watch(job_id, restart, task_pid)
    stamp = time.strftime("%H:%M:%S")
    print(
        f"[ltsweep.reaper {stamp}] task {task_pid} of job {job_id} (run {restart}) ended on "
        f"{os.uname().nodename}; stopped {stopped} Ray processes",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
