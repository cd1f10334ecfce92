"""Everything that speaks to SLURM and submitit: submit a sweep, run its Ray cluster, requeue.

A sweep on SLURM is one job of N nodes with one task each (submitit's `SweepJob`). Each task
starts one Ray node: rank 0 the head, the others join it; rank 0 then runs the Ray Tune
driver against that cluster. The truth about what is done lives in the run folder and the
cache, so a job that is preempted or runs out of time simply stops scheduling, lets submitit
requeue it, and the next run skips what is stored.

Safety: every command this module runs is an argv list (never a shell string), so no
profile or sweep value reaches a shell. The only shell is the sbatch script submitit writes;
its `#SBATCH` values are quoted by submitit, and the profile's `setup` lines are the user's
own commands, run as written by design.
"""

from __future__ import annotations

import json
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

from ltsweep.engine.ray_node import (
    ray_ports,
    raylet_running,
    reachable,
    render_node_bootstrap,
    routable_ip,
    stop_job_ray,
    wait_reachable,
)
from ltsweep.engine.reaper import spawn_reaper
from ltsweep.store.atomic import write_json
from ltsweep.sweep.cluster_profile import ClusterProfile, load_profile

SLURM_JSON = "slurm.json"
LOG_SUBDIR = Path("logs") / "slurm"
AUTH_TOKEN = ".ray-auth-token"
_HEAD_WAIT_S = 600.0  # how long workers wait for the head (it may be slow to start)
#: a worker node leaves this long after it last reached the head (the README states it): long
#: enough to ride out a network blip, short enough that a dead head frees its nodes quickly
_HEAD_LOST_S = 60.0
_WORKER_POLL_S = 2.0  # how often workers look for the driver's done marker and the head
#: SLURM states in which a recorded job still holds or waits for nodes
ACTIVE_STATES = frozenset(
    "PENDING RUNNING REQUEUED REQUEUE_HOLD REQUEUE_FED CONFIGURING COMPLETING RESIZING "
    "SUSPENDED STAGE_OUT SIGNALING".split()
)

Driver = Callable[..., dict]


# --- pure pieces: executor parameters, sbatch text (the Ray side: ray_node.py) -----------------


def executor_parameters(profile: ClusterProfile, job_name: str = "ltsweep") -> dict[str, Any]:
    """submitit SlurmExecutor parameters for a profile: one task per node, requeueable."""
    extra: dict[str, Any] = {"requeue": True}
    extra.update(profile.sbatch_extra())
    params: dict[str, Any] = {
        "job_name": job_name,
        "partition": profile.partition,
        "time": profile.time_limit,
        "nodes": profile.nodes,
        "ntasks_per_node": 1,
        "cpus_per_task": profile.cpus_per_node,
        "signal_delay_s": profile.signal_delay_s,
        "setup": list(profile.setup),
        "additional_parameters": extra,
    }
    if profile.gpus_per_node:
        params["gres"] = f"gpu:{profile.gpus_per_node}"
    optional = {
        "mem": profile.sbatch_mem(),
        "account": profile.account,
        "constraint": profile.constraint,
        "qos": profile.qos,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


class _OfflineSlurmExecutor(submitit.SlurmExecutor):
    """A SlurmExecutor that renders scripts on a machine without `srun` (never submits)."""

    @classmethod
    def affinity(cls) -> int:
        return 1


def _new_executor(
    cls: type[submitit.SlurmExecutor],
    profile: ClusterProfile,
    folder: str | os.PathLike[str],
    job_name: str,
) -> submitit.SlurmExecutor:
    python = shlex.quote(profile.python) if profile.python else None
    ex = cls(folder=folder, max_num_timeout=profile.max_requeues, python=python)
    ex.update_parameters(**executor_parameters(profile, job_name))
    return ex


def make_executor(
    profile: ClusterProfile | str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    job_name: str = "ltsweep",
) -> submitit.SlurmExecutor:
    """The submitit executor for a profile (needs `srun` on PATH); logs go to `folder`,
    which may contain submitit's `%j` (the job id)."""
    prof = profile if isinstance(profile, ClusterProfile) else load_profile(profile)
    return _new_executor(submitit.SlurmExecutor, prof, folder, job_name)


def sbatch_script(
    profile: ClusterProfile,
    folder: str | os.PathLike[str] = "logs/slurm/%j",
    *,
    job_name: str = "ltsweep",
) -> str:
    """The sbatch script submitit would write for this profile, without SLURM or submitting."""
    ex = _new_executor(_OfflineSlurmExecutor, profile, folder, job_name)
    return ex._make_submission_file_text(ex._submitit_command_str, "preview")


# --- the run record: run_dir/slurm.json ---------------------------------------------------------


def read_record(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """run_dir/slurm.json (job id, log folder, requeues, ...), or None if never submitted."""
    path = Path(run_dir) / SLURM_JSON
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _update_record(run_dir: Path, **fields: Any) -> None:
    record = read_record(run_dir) or {}
    record.update(fields)
    write_json(run_dir / SLURM_JSON, record)


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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --- submitting, watching, cancelling -----------------------------------------------------------


def submit_sweep(
    sweep_path: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    profile: ClusterProfile | str | os.PathLike[str],
    *,
    driver: Driver | None = None,
    command: str | None = None,
) -> submitit.Job[Any]:
    """Submit the sweep as one SLURM job; record it in run_dir/slurm.json and return the job.

    Refuses (JobActive) while the job recorded for run_dir still runs or waits. `command`,
    the user's submitting command line, is recorded for `ltsweep status` to repeat.

    The sweep is validated and frozen here (a bad file fails before queueing, and editing
    it later does not change a queued job). `driver` replaces ray_driver.run_sweep (tests).
    """
    from ltsweep.sweep.schema import load_sweep

    sweep = load_sweep(sweep_path)
    prof = profile if isinstance(profile, ClusterProfile) else load_profile(profile)
    run = Path(run_dir).resolve()
    cache = Path(cache_dir).resolve()
    earlier = read_record(run) or {}
    if earlier:
        state = job_state(run)
        if state in ACTIVE_STATES:
            raise JobActive(
                f"{run}: SLURM job {earlier['job_id']} of this run folder is still {state}; "
                f"follow it with `ltsweep status {run}` or stop it with `ltsweep cancel {run}`"
            )
    run.mkdir(parents=True, exist_ok=True)
    executor = make_executor(prof, run / LOG_SUBDIR / "%j", job_name=f"ltsweep-{sweep.name}")
    job = executor.submit(SweepJob(sweep, run, cache, prof, driver=driver))
    previous = list(earlier.get("previous_jobs", []))
    if earlier:
        previous.append({"job_id": earlier["job_id"], "state": job_state(run) or "unknown"})
    write_json(
        run / SLURM_JSON,
        {
            "job_id": job.job_id,
            "previous_jobs": previous,
            "log_folder": str(job.paths.folder),
            "submitted_at": _now(),
            "sweep_path": str(Path(sweep_path).resolve()),
            "cache_dir": str(cache),
            "profile": prof.model_dump(mode="json"),
            "requeues": 0,
            "command": command,
        },
    )
    return job


class JobActive(RuntimeError):
    """The run folder's recorded job still runs or waits: a second job would race it."""


def load_job(run_dir: str | os.PathLike[str]) -> submitit.Job[Any] | None:
    """The submitit job recorded in run_dir/slurm.json (for .result(), .state), or None."""
    record = read_record(run_dir)
    if record is None:
        return None
    return submitit.SlurmJob(folder=record["log_folder"], job_id=str(record["job_id"]))


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def job_state(run_dir: str | os.PathLike[str]) -> str | None:
    """SLURM's state of the recorded job (PENDING, RUNNING, COMPLETED, ...), or None if there
    is no record or SLURM does not know the job.

    Asks squeue first: it is the controller's live view, while sacct learns of a state change
    only when slurmctld has sent it to slurmdbd (seen here: sacct still said PENDING while the
    job's driver was already running). A job that has left the queue is asked of sacct.
    """
    record = read_record(run_dir)
    if record is None:
        return None
    jid = str(record["job_id"])
    lines = _output(["squeue", "-h", "-j", jid, "-o", "%T"]).splitlines()
    if not lines:
        lines = _output(["sacct", "-j", jid, "-n", "-X", "-P", "-o", "State"]).splitlines()
    states = [line.split()[0] for line in lines if line.strip()]
    return states[-1] if states else None


def requeue_count(run_dir: str | os.PathLike[str]) -> int:
    """How often the recorded job was requeued, by anyone: SLURM's own restart count
    (`scontrol show job`: Restarts=N) while the controller knows the job, else the count its
    last run recorded. Counts `scontrol requeue`, node failures and ltsweep's own requeues
    at the time limit alike (the record's `requeues` counts only the latter)."""
    record = read_record(run_dir) or {}
    if not record:
        return 0
    shown = _output(["scontrol", "-o", "show", "job", str(record["job_id"])])
    live = [int(w.split("=", 1)[1]) for w in shown.split() if w.startswith("Restarts=")]
    stored = max(int(record.get("restart_count", 0)), int(record.get("requeues", 0)))
    return max(live + [stored])


def cancel(run_dir: str | os.PathLike[str]) -> str | None:
    """scancel the recorded job; return its id (None without a record). Deletes nothing:
    the results and the cache stay, and a later run resumes from them."""
    record = read_record(run_dir)
    if record is None:
        return None
    jid = str(record["job_id"])
    subprocess.run(["scancel", jid], check=True, timeout=60)
    _update_record(Path(run_dir), cancelled_at=_now())
    return jid


# --- on the nodes ---------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[ltsweep.slurm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._job_id: str | None = None
        self._restart = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_stop=None, _thread=None, _job_id=None)  # not picklable / per run
        return state

    # - the run -
    def __call__(self) -> dict | None:
        env = submitit.JobEnvironment()
        job_id, rank = str(env.job_id), env.global_rank
        hostnames = list(env.hostnames)
        self._job_id = job_id
        ensure_auth_token(self.run_dir)
        os.environ.pop("RAY_AUTH_TOKEN", None)  # would take precedence over the file
        os.environ.update(ray_auth_env(self.run_dir))  # for `ray start` and the driver
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        self._restart = restart
        done_marker = self.run_dir / LOG_SUBDIR / job_id / f"driver-done.{restart}"
        if len(hostnames) == 1:
            head_ip, node_ip = "127.0.0.1", None  # Ray maps loopback to its own address
        else:
            head_ip = routable_ip(hostnames[0]) or hostnames[0]
            node_ip = routable_ip(hostnames[rank])
        argv = render_node_bootstrap(
            self.profile, job_id, hostnames, rank, head_ip=head_ip, node_ip=node_ip, restart=restart
        )
        gcs = ray_ports(self.profile, job_id).gcs
        _log(f"job {job_id} rank {rank}/{len(hostnames)} on {env.hostname}, restart {restart}")
        if stop_job_ray(job_id, grace_s=1.0):
            _log("stopped Ray processes left over by an earlier run of this job")
        # whatever ends this task (scancel, requeue, time limit, kill -9), its Ray goes too
        spawn_reaper(job_id, restart, self.run_dir / LOG_SUBDIR / job_id / "reaper.log")
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
        _log("starting Ray: " + shlex.join(argv))
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, timeout=300)

    def _run_head(
        self, job_id: str, hostnames: list[str], restart: int, argv: list[str], address: str
    ) -> dict:
        self._start_ray(argv)
        host, port = address.rsplit(":", 1)
        if not wait_reachable(host, int(port), 120.0):
            raise RuntimeError(f"the Ray head at {address} did not come up")
        _update_record(
            self.run_dir,
            job_id=job_id,
            started_at=_now(),
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
            _update_record(self.run_dir, failed_at=_now(), error=repr(box["error"])[:500])
            raise box["error"]
        _update_record(self.run_dir, finished_at=_now())
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
        if not wait_reachable(head, port, _HEAD_WAIT_S):
            raise RuntimeError(f"the Ray head {head}:{port} was not reachable in {_HEAD_WAIT_S}s")
        self._start_ray(argv)
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
            elif time.monotonic() - lost_since > _HEAD_LOST_S:
                _log(f"the Ray head {head}:{port} is gone for {_HEAD_LOST_S:.0f}s; leaving")
                return
            time.sleep(_WORKER_POLL_S)

    # - preemption and time limit -
    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission | None:
        """Called by submitit (rank 0) on SIGUSR2: stop scheduling, wait a bounded time for
        running units, stop Ray, and requeue unless max_requeues is used up."""
        if self._stop is not None:
            self._stop.set()
        wait_s = max(5.0, self.profile.signal_delay_s - 30.0)
        if self._thread is not None:
            self._thread.join(wait_s)
            if self._thread.is_alive():
                _log(f"the driver did not stop within {wait_s:.0f}s; its running units are lost")
        if self._job_id is not None:
            stop_job_ray(self._job_id, restart=self._restart)
        count = self.requeues + 1
        if count > self.profile.max_requeues:
            _log(
                f"not requeued: that would be requeue {count}, above max_requeues="
                f"{self.profile.max_requeues}; run the sweep again to resume from its cache"
            )
            _update_record(self.run_dir, last_checkpoint_at=_now(), gave_up_at=_now())
            return None
        _update_record(self.run_dir, requeues=count, last_checkpoint_at=_now())
        _log(f"requeueing ({count} of at most {self.profile.max_requeues})")
        self.requeues = count
        return DelayedSubmission(self, *args, **kwargs)
