"""What runs in a worker job: one node that joins a running sweep's Ray cluster, takes units,
and leaves.

A sweep's own job holds the Ray head and the driver; worker jobs (`worker_jobs` in the cluster
profile, or `ltsweep workers RUN --jobs N`) are one-node SLURM jobs that lend their node to
that Ray cluster for as long as it has work. Ray does the scheduling: a joining node's
resources are simply there for the units that wait. SLURM only lends the nodes.

A worker finds the head in the run folder (`slurm.json`: the sweep's job id, its run number
and the head's address; the cluster token beside it) and leaves, stopping its Ray,

- at once when the sweep's job has ended (a worker that starts late has nothing to join);
- when the driver is done (its done marker for that run of the job);
- when the driver has had no trial waiting to start and this node has run no unit for
  `worker_idle_s` (no work: the node goes back to the queue);
- when its own Ray died, or at its time limit (submitit does not requeue it: its unit is
  retried by Tune on another node);
- when it has not reached the head for `HEAD_LOST_S`: it then waits for the head's next run
  (a requeued head writes its new address) and leaves if none comes within `HEAD_WAIT_S`
  (both in `sweep_job`, shared with the nodes of the sweep's own job).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import submitit
from submitit.core.utils import UncompletedJobError

from ltsweep.engine import sweep_job as members
from ltsweep.engine.node_check import check_this_node
from ltsweep.engine.ray_node import (
    NodeWithoutGpus,
    node_gpus,
    raylet_running,
    reachable,
    render_node_bootstrap,
    routable_ip,
    running_units,
    stop_job_ray,
)
from ltsweep.engine.reaper import spawn_reaper
from ltsweep.engine.slurm_nodes import ACTIVE_STATES, job_state_now
from ltsweep.engine.slurm_record import LOG_SUBDIR, read_record
from ltsweep.sweep.cluster_profile import ClusterProfile

#: how often a waiting worker asks SLURM whether the sweep's job still runs: a site's
#: controller serves every worker's squeue, so not at each 2 s poll of the run folder
STATE_POLL_S = 30.0


def _log(msg: str) -> None:
    print(f"[ltsweep.worker {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass(frozen=True)
class Head:
    """The sweep's job as its run folder records it: the run of the job whose head is up at
    `address` (None until that run's head has started)."""

    job_id: str
    restart: int
    address: str | None

    def done_marker(self, run_dir: Path) -> Path:
        return run_dir / LOG_SUBDIR / self.job_id / f"driver-done.{self.restart}"


def read_head(run_dir: Path) -> Head | None:
    """The head recorded in run_dir/slurm.json, or None (no record yet, or unreadable)."""
    try:
        record = read_record(run_dir) or {}
    except Exception:  # noqa: BLE001 - a record being replaced: read it again next poll
        return None
    if "job_id" not in record:
        return None
    return Head(
        job_id=str(record["job_id"]),
        restart=int(record.get("restart_count", 0) or 0),
        address=record.get("ray_address"),
    )


def driver_waiting(run_dir: Path) -> int | None:
    """How many trials the driver has waiting for a node (its heartbeat), or None when it
    has not said (no heartbeat yet, or it stopped: a stopped driver has nothing waiting)."""
    try:
        beat = json.loads((run_dir / "driver.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(beat, dict) or not beat.get("running"):
        return None
    return int(beat.get("trials_pending", 0) or 0)


class WorkerJob:
    """The callable of a worker job (one task, one node); returns why it left."""

    def __init__(self, run_dir: Path, cache_dir: Path, profile: ClusterProfile) -> None:
        self.run_dir = Path(run_dir)
        self.cache_dir = Path(cache_dir)
        # its own port block, also where the sweep's job has a fixed one: a worker may share
        # a node with the head or with another worker
        self.profile = profile.model_copy(update={"ray_port_base": None})

    def __call__(self, index: int = 0) -> str:
        env = submitit.JobEnvironment()
        job_id = str(env.job_id)
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        over = self._sweep_over()
        if over:  # started late: leave before the node check, which takes seconds
            _log(f"worker job {job_id} on {env.hostname} leaves at once: {over}")
            return over
        check_this_node(self.run_dir, self.cache_dir, _log, marker=members.AUTH_TOKEN)
        os.environ.pop("RAY_AUTH_TOKEN", None)  # would take precedence over the file
        os.environ.update(members.ray_auth_env(self.run_dir))
        try:
            gpus = node_gpus(self.profile)
        except NodeWithoutGpus as err:
            _log(str(err))
            raise
        spawn_reaper(job_id, restart, self.run_dir / LOG_SUBDIR / job_id / "reaper.log")
        try:
            why = self._serve_heads(job_id, restart, gpus)
        except UncompletedJobError:  # submitit's SIGUSR2 handler: the time limit is near
            _log(f"worker job {job_id} on {env.hostname} leaves at its time limit (not requeued)")
            raise
        finally:
            stop_job_ray(job_id, restart=restart)
        _log(f"worker job {job_id} on {env.hostname} leaves: {why}")
        return why

    def _serve_heads(self, job_id: str, restart: int, gpus: int) -> str:
        """Join each run of the sweep's head in turn, until there is nothing left to join."""
        served: Head | None = None
        deadline = time.monotonic() + members.HEAD_WAIT_S
        asked = time.monotonic()  # __call__ has just asked SLURM
        while True:
            head = read_head(self.run_dir)
            if time.monotonic() - asked >= STATE_POLL_S:
                asked = time.monotonic()
                over = self._sweep_over(head)
                if over:
                    return over
            if head is not None:
                fresh = (
                    head.address and head != served and not head.done_marker(self.run_dir).exists()
                )
                if fresh and reachable(*_host_port(head.address)):
                    served = head
                    why = self._serve(head, job_id, restart, gpus)
                    stop_job_ray(job_id, restart=restart)
                    if why is not None:
                        return why
                    deadline = time.monotonic() + members.HEAD_WAIT_S  # its next run may come
                    continue
            if time.monotonic() > deadline:
                return f"no head of the sweep to join within {members.HEAD_WAIT_S:.0f}s"
            time.sleep(members.WORKER_POLL_S)

    def _sweep_over(self, head: Head | None = None) -> str | None:
        """Why there is nothing to join (the sweep's job has ended), or None."""
        head = head or read_head(self.run_dir)
        if head is None:
            return None
        state = job_state_now(head.job_id)
        if state and state not in ACTIVE_STATES:
            return f"the sweep's job {head.job_id} is {state}: nothing to join"
        return None

    def _serve(self, head: Head, job_id: str, restart: int, gpus: int) -> str | None:
        """This node in the head's Ray cluster until a reason to leave (returned), or None
        when the head was lost (its next run may come)."""
        host = socket.gethostname()
        argv = render_node_bootstrap(  # a node that joins (rank 1 of [head, this one])
            self.profile,
            job_id,
            [_host_port(head.address)[0], host],
            1,
            node_ip=routable_ip(host),
            restart=restart,
            gpus=gpus,
            head_address=head.address,
        )
        marker = head.done_marker(self.run_dir)
        _log(f"joining the Ray head {head.address} of job {head.job_id} (run {head.restart})")
        try:
            members.start_ray(argv, give_up=marker.exists, log=_log)
        except subprocess.CalledProcessError:
            if marker.exists():  # the head finished (and stopped) while this node joined
                return "the driver finished while this node joined"
            raise
        head_host, head_port = _host_port(head.address)
        lost_since: float | None = None
        idle_since: float | None = None
        ray_seen = False
        while True:
            if marker.exists():
                return "the driver is done"
            if raylet_running(job_id, restart):
                ray_seen = True
            elif ray_seen:
                return "this node's Ray died (its units are retried on other nodes)"
            now = time.monotonic()
            if reachable(head_host, head_port):
                lost_since = None
            elif lost_since is None:
                lost_since = now
            elif now - lost_since > members.HEAD_LOST_S:
                _log(f"the Ray head {head.address} is gone for {members.HEAD_LOST_S:.0f}s")
                return None
            if running_units(job_id, restart) or driver_waiting(self.run_dir) != 0:
                idle_since = None
            elif idle_since is None:
                idle_since = now
            elif now - idle_since > self.profile.worker_idle_s:
                return f"no unit to run here for {self.profile.worker_idle_s}s (none waiting)"
            time.sleep(members.WORKER_POLL_S)

    def __repr__(self) -> str:  # submitit names the job's callable in its logs
        return f"WorkerJob({self.run_dir})"


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)
