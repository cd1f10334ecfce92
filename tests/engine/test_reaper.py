"""The reaper stops every process of a dead task's Ray, even those that no longer say so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from ltsweep.engine import reaper
from ltsweep.engine.ray_node import ray_temp_dir
from tests.helpers import wait_until

#: a stand-in raylet: names the run's temp dir, starts a "worker" that names nothing of it
#: (as a Ray worker does once it calls itself `ray::...`), prints its pid and waits
RAYLET = (
    "import subprocess, sys, time\n"
    "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print(w.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def _gone(pid: int) -> bool:
    return reaper.process_start_time(pid) is None


def test_a_worker_orphaned_with_its_raylet_is_stopped_when_the_task_ends(monkeypatch):
    """`kill -9` of a driver's process group kills its raylet too: the worker, adopted by
    init, names nothing of the run, yet the reaper, which saw it earlier, stops it."""
    job_id = f"reapertest{os.getpid()}"
    find = reaper.job_ray_pids
    scanned = threading.Event()
    worker = 0

    def job_ray_pids(*args, **kwargs):
        pids = find(*args, **kwargs)
        if worker in pids:
            scanned.set()
        return pids

    monkeypatch.setattr(reaper, "job_ray_pids", job_ray_pids)
    task = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    raylet = subprocess.Popen(
        [sys.executable, "-c", RAYLET, f"--temp-dir={ray_temp_dir(job_id)}/session_1"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        worker = int(raylet.stdout.readline())
        stopped: list[int] = []
        watcher = threading.Thread(target=lambda: stopped.append(reaper.watch(job_id, 0, task.pid)))
        watcher.start()
        assert scanned.wait(timeout=30), "the reaper never saw the worker"
        raylet.kill()  # the raylet dies with the task: its worker is adopted by init
        raylet.wait()
        assert not _gone(worker)
        assert worker not in find(job_id, 0), "the orphaned worker should name nothing of its run"
        task.kill()
        task.wait()
        watcher.join(timeout=30)
        assert stopped == [1]
        wait_until(lambda: _gone(worker), 10, "the orphaned worker to be stopped")
    finally:
        for proc in (task, raylet):
            proc.kill()
            proc.wait()
        if worker and not _gone(worker):
            os.kill(worker, signal.SIGKILL)


def test_a_reused_pid_is_not_taken_for_a_process_the_reaper_saw():
    me = os.getpid()
    assert reaper._still_running({me: reaper.process_start_time(me)}) == {
        me: reaper.process_start_time(me)
    }
    assert reaper._still_running({me: "0"}) == {}  # same pid, another process
