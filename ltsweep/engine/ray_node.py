"""One job's Ray on a SLURM node: its ports, temp dir and `ray start` argv, and how to stop it.

Two sweeps may share a node, so everything here is per job: a port block derived from the
job id, a node-local temp dir named after it, and a stop that kills exactly the processes
under that temp dir (never another job's Ray, unlike `ray stop`). Pure functions except
`stop_job_ray`, `node_gpus` (it asks the node's driver) and the reachability probes; used by
`ltsweep.engine.sweep_job` (on the nodes) and `ltsweep.engine.reaper`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ltsweep import gpu_probe
from ltsweep.sweep.cluster_profile import RAY_PORT_BLOCK, ClusterProfile

#: job-derived Ray ports stay in [low, high): above common services, below Linux's ephemeral
#: range (32768-60999), where the kernel picks outgoing ports that could steal ours
_PORT_LOW, _PORT_HIGH = 12000, 32768
#: Ray's longest Unix socket path is <temp dir> + this much ("/session_<date>_<pid>/sockets/
#: plasma_store", pid up to 7 digits); Linux allows 107 bytes
_SOCKET_SUFFIX = len("/session_2026-11-24_19-10-51_150443_1234567/sockets/plasma_store")
_MAX_SOCKET = 107


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


def ray_temp_dir(job_id: str, restart: int = 0) -> str:
    """Node-local, short and per job: Ray's socket paths must stay under 107 bytes (and NFS
    breaks them), and a per-job folder lets us stop exactly this job's Ray processes.

    A requeued run of the job (SLURM_RESTART_COUNT > 0) gets a folder of its own
    (`...-<jobid>.r<restart>`), so the reaper of an earlier run, waking late, can never stop
    the Ray of the run that replaced it.
    """
    path = f"/tmp/ltsweep-ray-{job_id}" + (f".r{restart}" if restart else "")
    if len(path) + _SOCKET_SUFFIX >= _MAX_SOCKET:
        raise ValueError(f"Ray temp dir {path} would make socket paths of {_MAX_SOCKET}+ bytes")
    return path


class NodeWithoutGpus(RuntimeError):
    """The cluster profile asks for GPUs and this node sees none."""


def visible_gpu_count(listed: int, cuda_visible: str | None) -> int:
    """How many of the `listed` GPUs (nvidia-smi lists them all) CUDA_VISIBLE_DEVICES leaves
    to this node's processes, read as CUDA reads it: entries up to the first invalid one
    (an index past the last GPU, a repeat, a negative or odd entry); unset: all of them."""
    if cuda_visible is None:
        return listed
    seen: set[str] = set()
    for entry in (e.strip() for e in cuda_visible.split(",")):
        ok = (entry.isdigit() and int(entry) < listed) or entry.startswith(("GPU-", "MIG-"))
        if not ok or entry in seen:
            break
        seen.add(entry)
    return min(len(seen), listed)


def node_gpus(profile: ClusterProfile) -> int:
    """Ray's --num-gpus on this node: the GPUs it really has (its driver's list, cut by
    CUDA_VISIBLE_DEVICES), at most the profile's `gpus_per_node`.

    A GPU count taken on trust from the profile lets Ray schedule CUDA units onto a node
    whose torch sees no GPU; with none here while the profile asks for some, the node fails
    at once with one line (`NodeWithoutGpus`) instead.
    """
    asked = profile.gpus_per_node
    if asked == 0:
        return 0
    listed = gpu_probe.visible_gpus()
    cuda_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    have = visible_gpu_count(len(listed), cuda_visible)
    if have == 0:
        if listed:
            seen = f"nvidia-smi lists {len(listed)} (driver {listed[0].driver})"
        elif shutil.which("nvidia-smi") is None:
            seen = "no nvidia-smi"
        else:
            seen = "nvidia-smi lists none"
        where = "unset" if cuda_visible is None else repr(cuda_visible)
        raise NodeWithoutGpus(
            f"{socket.gethostname()}: the cluster profile asks for gpus_per_node {asked} but "
            f"this node sees no GPU ({seen}, CUDA_VISIBLE_DEVICES={where}); "
            "set gpus_per_node: 0 for CPU nodes, or ask SLURM for GPU nodes"
        )
    return min(have, asked)


def render_node_bootstrap(
    profile: ClusterProfile,
    job_id: str,
    hostnames: Sequence[str],
    rank: int,
    *,
    head_ip: str | None = None,
    node_ip: str | None = None,
    python: str | None = None,
    restart: int = 0,
    gpus: int | None = None,
    head_address: str | None = None,
) -> list[str]:
    """The exact `ray start` argv for node `rank` of the job (rank 0: the head).

    Pure, so it is tested without SLURM. CPUs and GPUs are explicit because Ray's detection
    is wrong under SLURM; every port is explicit so two jobs on one node never collide.
    `head_ip` defaults to the first hostname; `node_ip` (this node's address) is passed to
    Ray only when given. `gpus`: what the node really has (`node_gpus`), else the profile's.
    `head_address` (host:port): the head of another job, which a worker job joins; this
    node's own ports are still `job_id`'s.
    """
    if not 0 <= rank < len(hostnames):
        raise ValueError(f"rank {rank} outside the job's {len(hostnames)} nodes")
    ports = ray_ports(profile, job_id)
    argv = [python or sys.executable, "-m", "ray.scripts.scripts", "start"]
    if rank == 0:
        argv += ["--head", f"--port={ports.gcs}", "--include-dashboard=false"]
        argv += [f"--dashboard-port={ports.dashboard}"]
    else:
        argv += [f"--address={head_address or f'{head_ip or hostnames[0]}:{ports.gcs}'}"]
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
        f"--num-gpus={profile.gpus_per_node if gpus is None else gpus}",
        f"--temp-dir={ray_temp_dir(job_id, restart)}",
        "--disable-usage-stats",
    ]
    if node_ip:
        argv.append(f"--node-ip-address={node_ip}")
    return argv


def _proc_table(node_of: str = "self") -> dict[int, tuple[int, str, bytes]]:
    """pid -> (ppid, state, cmdline) of the processes on the node of process `node_of`
    (default: this one), from /proc (no psutil).

    "This node" is this process's network namespace: on a cluster every process of a node
    shares it, and where several nodes share one kernel (containers, or the namespaced test
    cluster of cluster/start-slurm.sh --nodes N) it keeps one node from stopping another's Ray.
    """
    table = {}
    own_net = _net_namespace(node_of)
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
        if _net_namespace(entry) != own_net:
            continue
        table[int(entry)] = (int(fields[1]), fields[0], cmdline)
    return table


def _net_namespace(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def job_ray_pids(
    job_id: str,
    restart: int | None = None,
    node_of: str = "self",
    table: dict[int, tuple[int, str, bytes]] | None = None,
) -> set[int]:
    """Processes whose command line names the job's Ray temp dir (of one run, or of every
    run of the job when `restart` is None), and their descendants (workers and agents rename
    themselves `ray::...`). Never another job's Ray, unlike `ray stop`, which kills every Ray
    on the node. `node_of`: a pid on the node to look at (default: this process's node);
    `table`: a `_proc_table` already read, instead of reading /proc again."""
    table = _proc_table(node_of) if table is None else table
    base = ray_temp_dir(job_id).encode()
    if restart is None:  # every run: /tmp/ltsweep-ray-123/ and /tmp/ltsweep-ray-123.r2/
        keys: tuple[bytes, ...] = (base + b"/", base + b"\0", base + b".r")
    else:  # not /tmp/...-12 for job 123, nor run .r1 for run .r10
        own = ray_temp_dir(job_id, restart).encode()
        keys = (own + b"/", own + b"\0")
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


def raylet_running(job_id: str, restart: int) -> bool:
    """Whether this node still runs the raylet of this run of the job (a worker whose own
    Ray died has nothing left to offer the cluster)."""
    table = _proc_table()
    own = ray_temp_dir(job_id, restart).encode()
    return any(
        state != "Z" and b"raylet" in cmd.split(b"\0", 1)[0] and own + b"/" in cmd
        for _, state, cmd in table.values()
    )


def running_units(job_id: str, restart: int) -> bool:
    """Whether a unit of this run of the job runs on this node now: a Ray worker of its
    Ray whose title says it is in a trial's training call (`ray::ImplicitFunc.train`); an
    idle reused actor is only `ray::ImplicitFunc`."""
    table = _proc_table()
    return any(
        table[pid][2].startswith(b"ray::ImplicitFunc.train")
        for pid in job_ray_pids(job_id, restart, table=table)
    )


def stop_job_ray(
    job_id: str, grace_s: float = 3.0, restart: int | None = None, also: Iterable[int] = ()
) -> int:
    """Stop this job's Ray processes on this node (of one run, or of all its runs when
    `restart` is None), and the processes `also` (ones known to be of it that no longer say
    so): SIGTERM, then SIGKILL after `grace_s`.

    Ray's graceful shutdown takes ~10 s and buys nothing here: the driver has finished or
    been stopped, and results are on disk. Returns how many were found. Idempotent."""
    pids = job_ray_pids(job_id, restart) | set(also)
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


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def wait_reachable(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if reachable(host, port):
            return True
        time.sleep(1.0)
    return False


def routable_ip(host: str) -> str | None:
    """The host's address if it resolves to a non-loopback one (Debian maps the hostname to
    127.0.1.1, useless to other nodes); else None, leaving the choice to Ray."""
    try:
        ip = socket.gethostbyname(host)
    except OSError:
        return None
    return None if ip.startswith("127.") else ip
