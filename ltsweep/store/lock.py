"""One driver per run folder: `<run>/driver.lock`, taken before anything is written.

The lock file holds its holder's pid, host, start time, a heartbeat (refreshed every
`HEARTBEAT_S` while the driver runs) and, inside a SLURM job, the job id and restart count.
It is created with O_EXCL, so of two drivers started together exactly one gets it; the other
is refused at once with the holder named. A lock is stale, and is taken over, when:

* its holder ran on this host and its pid is gone;
* its holder ran in a SLURM job that is no longer active (`squeue` does not list it as
  pending or running), or in an earlier run of this same job (a requeue: same job id,
  another restart count);
* its heartbeat is older than `STALE_S` (10 minutes): a holder on another host that cannot
  be asked (a killed job on a node, a machine that went down).

Taking over moves the stale file aside under a unique name before creating a new one with
O_EXCL, so two drivers taking over the same stale lock cannot both win.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ltsweep.store.atomic import pid_alive

LOCK = "driver.lock"
HEARTBEAT_S = 30.0
STALE_S = 600.0
_ACTIVE_SLURM = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"}


class LockHeld(RuntimeError):
    """Another driver holds the run folder; str() is one line naming it."""


def _me() -> dict[str, Any]:
    now = time.time()
    info: dict[str, Any] = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": now,
        "heartbeat": now,
    }
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        info["slurm_job_id"] = job
        info["slurm_restart"] = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    return info


def read_lock(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The lock's holder, {} if the file is unreadable, None if there is no lock."""
    try:
        text = (Path(run_dir) / LOCK).read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _slurm_active(job_id: str) -> bool | None:
    """Whether SLURM lists the job as pending/running; None if SLURM cannot be asked."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", str(job_id), "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        # squeue exits non-zero for a job id it no longer knows
        return False if "Invalid job id" in out.stderr else None
    return any(s.strip() in _ACTIVE_SLURM for s in out.stdout.split())


def stale_reason(info: dict[str, Any]) -> str | None:
    """Why the lock `info` no longer holds (its holder is gone), or None if it holds."""
    if not info:
        return "unreadable lock file"
    try:
        heartbeat = float(info.get("heartbeat", 0))
        pid = int(info.get("pid", -1))
    except (TypeError, ValueError):
        return "unreadable lock file"
    job = info.get("slurm_job_id")
    if job is not None:
        mine = os.environ.get("SLURM_JOB_ID")
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if mine == str(job) and restart != info.get("slurm_restart"):
            return f"held by an earlier run of this SLURM job {job} (requeued)"
        active = _slurm_active(str(job))
        if active is False:
            return f"its SLURM job {job} is no longer active"
        if active:  # its node may not share this host's process table: trust the heartbeat
            if time.time() - heartbeat > STALE_S:
                return f"no heartbeat for {(time.time() - heartbeat) / 60:.0f} min"
            return None
    if info.get("host") == socket.gethostname() and not pid_alive(pid):
        return f"its process {pid} on this host is gone"
    if time.time() - heartbeat > STALE_S:
        return f"no heartbeat for {(time.time() - heartbeat) / 60:.0f} min"
    return None


def describe(info: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("started", 0))))
    where = f"pid {info.get('pid')} on {info.get('host')}, started {started}"
    if info.get("slurm_job_id"):
        where += f", SLURM job {info['slurm_job_id']}"
    return where


class RunLock:
    """The run folder's driver lock; `with RunLock(run_dir):` or acquire()/release()."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / LOCK
        self.info: dict[str, Any] = {}
        self.took_over: str | None = None  # why a stale lock was taken over, if one was
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _create(self) -> bool:
        self.info = _me()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(self.info, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                self._start_heartbeat()
                return self
            holder = read_lock(self.path.parent)
            if holder is None:
                continue  # released meanwhile: try again
            reason = stale_reason(holder)
            if reason is None:
                raise LockHeld(
                    f"{self.path.parent}: another ltsweep driver runs this folder "
                    f"({describe(holder)}); wait for it, or stop it, then run again "
                    f"(a lock whose holder is gone is taken over: {self.path})"
                )
            aside = self.path.with_name(f".{LOCK}.stale.{os.getpid()}.{os.urandom(3).hex()}")
            try:
                os.replace(self.path, aside)
            except FileNotFoundError:
                continue
            # another driver may have replaced the stale lock by its own in between: if what
            # was moved aside is not what was judged stale, put it back and look again
            if read_lock_file(aside) != holder:
                with contextlib.suppress(OSError):
                    os.link(aside, self.path)  # fails if a lock exists again: then keep that one
                with contextlib.suppress(OSError):
                    aside.unlink()
                continue
            with contextlib.suppress(OSError):
                aside.unlink()
            self.took_over = f"{describe(holder)}: {reason}"
        raise LockHeld(f"{self.path}: could not take the run folder's lock; try again")

    def _ours(self) -> bool:
        holder = read_lock(self.path.parent) or {}
        return all(holder.get(k) == self.info.get(k) for k in ("pid", "host", "started"))

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                if not self._ours():
                    return  # taken over (we were judged gone): no longer ours to refresh
                self.info["heartbeat"] = time.time()
                tmp = self.path.with_name(f".{LOCK}.beat.{os.getpid()}")
                with contextlib.suppress(OSError):
                    tmp.write_text(json.dumps(self.info))
                    os.replace(tmp, self.path)

        self._thread = threading.Thread(target=beat, name="ltsweep-lock", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        if self._ours():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_lock_file(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
