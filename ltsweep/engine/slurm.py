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
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from ltsweep.atomic import write_json
from ltsweep.cluster_profile import RAY_PORT_BLOCK, ClusterProfile, load_profile

SLURM_JSON = "slurm.json"
LOG_SUBDIR = Path("logs") / "slurm"
AUTH_TOKEN = ".ray-auth-token"
#: job-derived Ray ports stay in [low, high): above common services, below Linux's ephemeral
#: range (32768-60999), where the kernel picks outgoing ports that could steal ours
_PORT_LOW, _PORT_HIGH = 12000, 32768
#: Ray's longest Unix socket path is <temp dir> + this much ("/session_<date>_<pid>/sockets/
#: plasma_store", pid up to 7 digits); Linux allows 107 bytes
_SOCKET_SUFFIX = len("/session_2026-11-24_19-10-51_150443_1234567/sockets/plasma_store")
_MAX_SOCKET = 107
_HEAD_WAIT_S = 600.0  # how long workers wait for the head (it may be slow to start)
_HEAD_LOST_S = 120.0  # workers give up when the head is unreachable this long
_WORKER_POLL_S = 5.0  # how often workers look for the driver's done marker

Driver = Callable[..., dict]


# --- pure pieces: ports, temp dir, ray argv, sbatch text ---------------------------------------


@dataclass(frozen=True)
class RayPorts:
    """All ports one job's Ray uses on a node: set explicitly so that no two jobs collide."""

    gcs: int
    node_manager: int
    object_manager: int
    dashboard: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    runtime_env_agent: int
    metrics_export: int
    min_worker: int
    max_worker: int


def _job_number(job_id: str) -> int:
    m = re.fullmatch(r"(\d+)(?:_(\d+))?", str(job_id))
    if not m:
        raise ValueError(f"not a SLURM job id: {job_id!r}")
    return int(m.group(1)) + int(m.group(2) or 0)


def ray_ports(profile: ClusterProfile, job_id: str) -> RayPorts:
    """The job's port block: profile.ray_port_base, or one derived from the job id.

    Consecutive job ids get different blocks, so two sweeps sharing a node do not collide
    (ids that differ by a multiple of the number of blocks would; set ray_port_base then).
    """
    if profile.ray_port_base is not None:
        base = profile.ray_port_base
    else:
        slots = (_PORT_HIGH - _PORT_LOW) // RAY_PORT_BLOCK
        base = _PORT_LOW + (_job_number(job_id) % slots) * RAY_PORT_BLOCK
    return RayPorts(
        gcs=base,
        node_manager=base + 1,
        object_manager=base + 2,
        dashboard=base + 3,
        dashboard_agent_listen=base + 4,
        dashboard_agent_grpc=base + 5,
        runtime_env_agent=base + 6,
        metrics_export=base + 7,
        min_worker=base + 8,
        max_worker=base + RAY_PORT_BLOCK - 1,
    )


def ray_temp_dir(job_id: str) -> str:
    """Node-local, short and per job: Ray's socket paths must stay under 107 bytes (and NFS
    breaks them), and a per-job folder lets us stop exactly this job's Ray processes."""
    path = f"/tmp/ltsweep-ray-{job_id}"
    if len(path) + _SOCKET_SUFFIX >= _MAX_SOCKET:
        raise ValueError(f"Ray temp dir {path} would make socket paths of {_MAX_SOCKET}+ bytes")
    return path


def render_node_bootstrap(
    profile: ClusterProfile,
    job_id: str,
    hostnames: Sequence[str],
    rank: int,
    *,
    head_ip: str | None = None,
    node_ip: str | None = None,
    python: str | None = None,
) -> list[str]:
    """The exact `ray start` argv for node `rank` of the job (rank 0: the head).

    Pure, so it is tested without SLURM. CPUs and GPUs are explicit because Ray's detection
    is wrong under SLURM; every port is explicit so two jobs on one node never collide.
    `head_ip` defaults to the first hostname; `node_ip` (this node's address) is passed to
    Ray only when given.
    """
    if not 0 <= rank < len(hostnames):
        raise ValueError(f"rank {rank} outside the job's {len(hostnames)} nodes")
    ports = ray_ports(profile, job_id)
    argv = [python or sys.executable, "-m", "ray.scripts.scripts", "start"]
    if rank == 0:
        argv += ["--head", f"--port={ports.gcs}", "--include-dashboard=false"]
        argv += [f"--dashboard-port={ports.dashboard}"]
    else:
        argv += [f"--address={head_ip or hostnames[0]}:{ports.gcs}"]
    argv += [
        f"--node-manager-port={ports.node_manager}",
        f"--object-manager-port={ports.object_manager}",
        f"--dashboard-agent-listen-port={ports.dashboard_agent_listen}",
        f"--dashboard-agent-grpc-port={ports.dashboard_agent_grpc}",
        f"--runtime-env-agent-port={ports.runtime_env_agent}",
        f"--metrics-export-port={ports.metrics_export}",
        f"--min-worker-port={ports.min_worker}",
        f"--max-worker-port={ports.max_worker}",
        f"--num-cpus={profile.cpus_per_node}",
        f"--num-gpus={profile.gpus_per_node}",
        f"--temp-dir={ray_temp_dir(job_id)}",
        "--disable-usage-stats",
    ]
    if node_ip:
        argv.append(f"--node-ip-address={node_ip}")
    return argv


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
) -> submitit.Job[Any]:
    """Submit the sweep as one SLURM job; record it in run_dir/slurm.json and return the job.

    The sweep is validated and frozen here (a bad file fails before queueing, and editing
    it later does not change a queued job). `driver` replaces ray_driver.run_sweep (tests).
    """
    from ltsweep.spec import load_sweep

    sweep = load_sweep(sweep_path)
    prof = profile if isinstance(profile, ClusterProfile) else load_profile(profile)
    run = Path(run_dir).resolve()
    cache = Path(cache_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    executor = make_executor(prof, run / LOG_SUBDIR / "%j", job_name=f"ltsweep-{sweep.name}")
    job = executor.submit(SweepJob(sweep, run, cache, prof, driver=driver))
    write_json(
        run / SLURM_JSON,
        {
            "job_id": job.job_id,
            "log_folder": str(job.paths.folder),
            "submitted_at": _now(),
            "sweep_path": str(Path(sweep_path).resolve()),
            "cache_dir": str(cache),
            "profile": prof.model_dump(mode="json"),
            "requeues": 0,
        },
    )
    return job


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
    is no record or SLURM does not know the job. Asks sacct, then squeue (sacct lags)."""
    record = read_record(run_dir)
    if record is None:
        return None
    jid = str(record["job_id"])
    lines = _output(["sacct", "-j", jid, "-n", "-X", "-P", "-o", "State"]).splitlines()
    if not lines:
        lines = _output(["squeue", "-h", "-j", jid, "-o", "%T"]).splitlines()
    states = [line.split()[0] for line in lines if line.strip()]
    return states[-1] if states else None


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


# --- on the nodes: Ray processes of one job --------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[ltsweep.slurm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _proc_table() -> dict[int, tuple[int, str, bytes]]:
    """pid -> (ppid, state, cmdline) from /proc (no psutil dependency)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), fields[0], cmdline)
    return table


def _job_ray_pids(temp_dir: str) -> set[int]:
    """Processes whose command line names this job's Ray temp dir, and their descendants
    (workers and agents rename themselves `ray::...`). Never another job's Ray, unlike
    `ray stop`, which kills every Ray on the node."""
    table = _proc_table()
    keys = (temp_dir.encode() + b"/", temp_dir.encode() + b"\0")  # not /tmp/...-12 for job 123
    picked = {
        pid
        for pid, (_, state, cmd) in table.items()
        if state != "Z" and any(k in cmd for k in keys)
    }
    grew = True
    while grew:
        grew = False
        for pid, (ppid, state, _) in table.items():
            if ppid in picked and pid not in picked and state != "Z":
                picked.add(pid)
                grew = True
    picked.discard(os.getpid())
    return picked


def stop_job_ray(job_id: str, grace_s: float = 3.0) -> int:
    """Stop this job's Ray processes on this node: SIGTERM, then SIGKILL after `grace_s`.

    Ray's graceful shutdown takes ~10 s and buys nothing here: the driver has finished or
    been stopped, and results are on disk. Returns how many were found. Idempotent."""
    pids = _job_ray_pids(ray_temp_dir(job_id))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            table = _proc_table()
            if not any(p in table and table[p][1] != "Z" for p in pids):
                return len(pids)
            time.sleep(0.2)
    return len(pids)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def _wait_reachable(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _reachable(host, port):
            return True
        time.sleep(1.0)
    return False


def _routable_ip(host: str) -> str | None:
    """The host's address if it resolves to a non-loopback one (Debian maps the hostname to
    127.0.1.1, useless to other nodes); else None, leaving the choice to Ray."""
    try:
        ip = socket.gethostbyname(host)
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


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
        done_marker = self.run_dir / LOG_SUBDIR / job_id / f"driver-done.{restart}"
        if len(hostnames) == 1:
            head_ip, node_ip = "127.0.0.1", None  # Ray maps loopback to its own address
        else:
            head_ip = _routable_ip(hostnames[0]) or hostnames[0]
            node_ip = _routable_ip(hostnames[rank])
        argv = render_node_bootstrap(
            self.profile, job_id, hostnames, rank, head_ip=head_ip, node_ip=node_ip
        )
        gcs = ray_ports(self.profile, job_id).gcs
        _log(f"job {job_id} rank {rank}/{len(hostnames)} on {env.hostname}, restart {restart}")
        if stop_job_ray(job_id, grace_s=1.0):
            _log("stopped Ray processes left over by an earlier run of this job")
        try:
            if rank == 0:
                return self._run_head(job_id, hostnames, restart, argv, f"{head_ip}:{gcs}")
            self._run_worker(argv, head_ip, gcs, done_marker)
            return None
        finally:
            if rank == 0:
                done_marker.parent.mkdir(parents=True, exist_ok=True)
                done_marker.touch()
            stop_job_ray(job_id)

    def _start_ray(self, argv: list[str]) -> None:
        _log("starting Ray: " + shlex.join(argv))
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, timeout=300)

    def _run_head(
        self, job_id: str, hostnames: list[str], restart: int, argv: list[str], address: str
    ) -> dict:
        self._start_ray(argv)
        host, port = address.rsplit(":", 1)
        if not _wait_reachable(host, int(port), 120.0):
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
        if not _wait_reachable(head, port, _HEAD_WAIT_S):
            raise RuntimeError(f"the Ray head {head}:{port} was not reachable in {_HEAD_WAIT_S}s")
        self._start_ray(argv)
        lost_since: float | None = None
        while not done_marker.exists():
            if _reachable(head, port):
                lost_since = None
            elif lost_since is None:
                lost_since = time.monotonic()
            elif time.monotonic() - lost_since > _HEAD_LOST_S:
                _log(f"the Ray head {head}:{port} is gone; leaving")
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
            stop_job_ray(self._job_id)
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
