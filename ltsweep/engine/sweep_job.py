"""What runs on the nodes of a sweep's SLURM job: one task per node, one Ray node per task.

Rank 0 starts the Ray head and runs the Ray Tune driver against it; the other ranks join the
head and wait for the driver's done marker. A worker that cannot reach the head for
`HEAD_LOST_S` seconds, or whose own Ray died, leaves; every task first starts a reaper
(`engine/reaper.py`) so that its Ray never outlives it, however it ends. On SIGUSR2 (time
limit, preemption) rank 0 stops scheduling and requeues the job (`checkpoint`).
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from ltsweep.engine.node_check import check_this_node, mark_cache
from ltsweep.engine.ray_node import (
    NodeWithoutGpus,
    node_gpus,
    ray_ports,
    raylet_running,
    reachable,
    render_node_bootstrap,
    routable_ip,
    stop_job_ray,
    wait_reachable,
)
from ltsweep.engine.reaper import spawn_reaper
from ltsweep.engine.slurm_nodes import spawn_head_watch
from ltsweep.engine.slurm_record import LOG_SUBDIR, now, update_record
from ltsweep.sweep.cluster_profile import ClusterProfile

AUTH_TOKEN = ".ray-auth-token"
HEAD_WAIT_S = 600.0  # how long workers wait for the head (it may be slow to start)
#: a worker node leaves this long after it last reached the head (the README states it): long
#: enough to ride out a network blip, short enough that a dead head frees its nodes quickly
HEAD_LOST_S = 60.0
WORKER_POLL_S = 2.0  # how often workers look for the driver's done marker and the head

Driver = Callable[..., dict]


def ensure_auth_token(run_dir: str | os.PathLike[str]) -> Path:
    """run_dir/.ray-auth-token (mode 600), created once: the job's Ray cluster token.

    Ray 2.60 turns token auth on for `ray start --head` whenever ~/.ray/auth_token exists
    (any local `ray.init()` writes one) but not for `ray.init(address=...)`, so the driver
    would be refused. Giving every node and the driver one explicit token avoids that, keeps
    other users off the cluster's ports, and reaches all nodes through the shared run folder.
    """
    path = Path(run_dir) / AUTH_TOKEN
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{AUTH_TOKEN}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    os.replace(tmp, path)
    return path


def ray_auth_env(run_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Environment for `ray start` and the driver: token auth with the run's token file."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(Path(run_dir) / AUTH_TOKEN)}


def _log(msg: str) -> None:
    print(f"[ltsweep.slurm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start_ray(argv: list[str], give_up: Callable[[], bool], log: Callable[[str], None]) -> None:
    """Run `ray start` to its end, killing it once `give_up()` is true or after 300 s;
    CalledProcessError unless it succeeded."""
    log("starting Ray: " + shlex.join(argv))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None:
        if give_up() or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            break
        time.sleep(0.5)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv)


# --- the submitted callable ------------------------------------------------------------------------


class SweepJob(Checkpointable):
    """What runs in each task of the sweep's SLURM job.

    Rank 0 starts the Ray head and runs the driver in a thread (the main thread must stay
    free for submitit's SIGUSR2 handler, which calls `checkpoint`); the other ranks join the
    head and wait until its driver is done. `checkpoint` stops scheduling, stops Ray and
    requeues, at most profile.max_requeues times.
    """

    def __init__(
        self,
        sweep: Any,
        run_dir: Path,
        cache_dir: Path,
        profile: ClusterProfile,
        *,
        driver: Driver | None = None,
        requeues: int = 0,
    ) -> None:
        self.sweep = sweep
        self.run_dir = Path(run_dir)
        self.cache_dir = Path(cache_dir)
        self.profile = profile
        self.driver = driver
        self.requeues = requeues
        ensure_auth_token(self.run_dir)  # on the submit host, before any node needs it
        mark_cache(self.cache_dir)  # so that a node seeing another folder there knows
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._job_id: str | None = None
        self._restart = 0
        self._done_marker: Path | None = None  # a worker's: the driver is done when it exists

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_stop=None, _thread=None, _job_id=None, _done_marker=None)  # per run
        return state

    # - the run -
    def __call__(self) -> dict | None:
        env = submitit.JobEnvironment()
        job_id, rank = str(env.job_id), env.global_rank
        hostnames = list(env.hostnames)
        self._job_id = job_id
        # first: a node that cannot run units (or see the run folder) fails the job at once,
        # its failing line in this task's log (srun --kill-on-bad-exit stops the other nodes)
        check_this_node(self.run_dir, self.cache_dir, _log, marker=AUTH_TOKEN)
        ensure_auth_token(self.run_dir)
        os.environ.pop("RAY_AUTH_TOKEN", None)  # would take precedence over the file
        os.environ.update(ray_auth_env(self.run_dir))  # for `ray start` and the driver
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        self._restart = restart
        self._done_marker = None  # set by a worker once it knows the marker; never the head
        done_marker = self.run_dir / LOG_SUBDIR / job_id / f"driver-done.{restart}"
        # The head binds an address other hosts reach, also in a one-node job: worker jobs
        # (`ltsweep workers`) join it from their own nodes. A host whose name resolves only to
        # loopback keeps Ray on loopback, where only this host's jobs can join.
        node_ip = routable_ip(hostnames[rank])
        head_ip = routable_ip(hostnames[0]) or (hostnames[0] if len(hostnames) > 1 else "127.0.0.1")
        try:  # Ray is told the GPUs this node really has, and none is a failure at once
            gpus = node_gpus(self.profile)
        except NodeWithoutGpus as err:
            _log(str(err))
            raise
        argv = render_node_bootstrap(
            self.profile,
            job_id,
            hostnames,
            rank,
            head_ip=head_ip,
            node_ip=node_ip,
            restart=restart,
            gpus=gpus,
        )
        gcs = ray_ports(self.profile, job_id).gcs
        _log(f"job {job_id} rank {rank}/{len(hostnames)} on {env.hostname}, restart {restart}")
        if stop_job_ray(job_id, grace_s=1.0):
            _log("stopped Ray processes left over by an earlier run of this job")
        # whatever ends this task (scancel, requeue, time limit, kill -9), its Ray goes too
        spawn_reaper(job_id, restart, self.run_dir / LOG_SUBDIR / job_id / "reaper.log")
        self._watch_head(job_id, hostnames, rank)
        try:
            if rank == 0:
                return self._run_head(job_id, hostnames, restart, argv, f"{head_ip}:{gcs}")
            self._run_worker(argv, head_ip, gcs, done_marker)
            return None
        finally:
            if rank == 0:
                done_marker.parent.mkdir(parents=True, exist_ok=True)
                done_marker.touch()
            stop_job_ray(job_id, restart=restart)

    def _start_ray(self, argv: list[str]) -> None:
        """Run `ray start`; on a worker, give up at once when the driver's done marker appears
        (a head that finished while this node joined would leave `ray start` retrying)."""
        marker = self._done_marker
        start_ray(argv, give_up=lambda: marker is not None and marker.exists(), log=_log)

    def _run_head(
        self, job_id: str, hostnames: list[str], restart: int, argv: list[str], address: str
    ) -> dict:
        self._start_ray(argv)
        host, port = address.rsplit(":", 1)
        if not wait_reachable(host, int(port), 120.0):
            raise RuntimeError(f"the Ray head at {address} did not come up")
        update_record(
            self.run_dir,
            job_id=job_id,
            started_at=now(),
            restart_count=restart,
            hostnames=hostnames,
            ray_address=address,
        )
        self._stop = threading.Event()
        box: dict[str, Any] = {}
        self._thread = threading.Thread(
            target=self._drive, args=(address, self._stop, box), name="ltsweep-driver", daemon=True
        )
        self._thread.start()
        while self._thread.is_alive():
            self._thread.join(1.0)  # a short wait keeps the main thread free for signals
        if "error" in box:
            update_record(self.run_dir, failed_at=now(), error=repr(box["error"])[:500])
            raise box["error"]
        update_record(self.run_dir, finished_at=now())
        return box["result"]

    def _drive(self, address: str, stop: threading.Event, box: dict[str, Any]) -> None:
        try:
            driver = self.driver
            if driver is None:
                from ltsweep.engine.ray_driver import run_sweep as driver
            box["result"] = driver(
                self.sweep,
                self.run_dir,
                self.cache_dir,
                address=address,
                show_progress=False,
                stop_event=stop,
            )
        except BaseException as err:  # handed to the main thread, which raises it
            box["error"] = err

    def _run_worker(self, argv: list[str], head: str, port: int, done_marker: Path) -> None:
        deadline = time.monotonic() + HEAD_WAIT_S
        while not wait_reachable(head, port, WORKER_POLL_S):
            if done_marker.exists():
                _log("the driver finished before this node joined; leaving")
                return  # it had nothing (left) to do
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Ray head {head}:{port} was not reachable in {HEAD_WAIT_S}s"
                )
        self._done_marker = done_marker
        try:
            self._start_ray(argv)
        except subprocess.CalledProcessError:
            if done_marker.exists():  # the head finished (and stopped) while this node joined
                _log("the driver finished before this node joined; leaving")
                return
            raise
        lost_since: float | None = None
        ray_seen = False
        while not done_marker.exists():
            if self._job_id is not None and raylet_running(self._job_id, self._restart):
                ray_seen = True
            elif ray_seen:
                _log("this node's Ray died; leaving (its units are retried on other nodes)")
                return
            if reachable(head, port):
                lost_since = None
            elif lost_since is None:
                lost_since = time.monotonic()
            elif time.monotonic() - lost_since > HEAD_LOST_S:
                _log(f"the Ray head {head}:{port} is gone for {HEAD_LOST_S:.0f}s; leaving")
                return
            time.sleep(WORKER_POLL_S)

    def _watch_head(self, job_id: str, hostnames: list[str], rank: int) -> None:
        """Under no_kill SLURM keeps a job whose first node failed, headless, until its time
        limit (that node runs the batch script, the Ray head and the driver). Ranks 1 and 2
        leave a detached watcher on their node for the run's life, which requeues the job
        once SLURM drops that node from it (`slurm_nodes.watch_head`): it outlives this task,
        which may be killed with the head's srun."""
        if not self.profile.no_kill or rank not in (1, 2) or len(hostnames) < 2:
            return
        limit_s = 60.0 * self.profile.time_limit + 600.0
        log = self.run_dir / LOG_SUBDIR / job_id / f"head-watch.{rank}.log"
        spawn_head_watch(job_id, hostnames[0], log, limit_s)

    # - preemption and time limit -
    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission | None:
        """Called by submitit (rank 0) on SIGUSR2: stop scheduling, wait a bounded time for
        running units, stop Ray, and requeue unless max_requeues is used up.

        The decision is recorded first: SLURM may send the signal in the same pass as the
        time-limit kill (its limits are checked every 30 s), and SIGKILL follows KillWait
        seconds later, possibly before the waits below end."""
        count = self.requeues + 1
        gives_up = count > self.profile.max_requeues
        if gives_up:
            update_record(self.run_dir, last_checkpoint_at=now(), gave_up_at=now())
        else:
            update_record(self.run_dir, requeues=count, last_checkpoint_at=now())
        if self._stop is not None:
            self._stop.set()
        wait_s = max(5.0, self.profile.signal_delay_s - 30.0)
        if self._thread is not None:
            self._thread.join(wait_s)
            if self._thread.is_alive():
                _log(f"the driver did not stop within {wait_s:.0f}s; its running units are lost")
        if self._job_id is not None:
            stop_job_ray(self._job_id, restart=self._restart)
        if gives_up:
            _log(
                f"not requeued: that would be requeue {count}, above max_requeues="
                f"{self.profile.max_requeues}; run the sweep again to resume from its cache"
            )
            return None
        _log(f"requeueing ({count} of at most {self.profile.max_requeues})")
        self.requeues = count
        return DelayedSubmission(self, *args, **kwargs)
