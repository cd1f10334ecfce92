"""Everything the submit host says to SLURM: submit a sweep, follow it, count its requeues,
cancel it.

A sweep on SLURM is one job of N nodes with one task each, running `SweepJob`
(`engine/sweep_job.py`: the Ray cluster on the nodes, the driver on the first one). The truth
about what is done lives in the run folder and the cache, so a job that is preempted or runs
out of time simply stops scheduling, lets submitit requeue it, and the next run skips what is
stored.

Safety: every command this module runs is an argv list (never a shell string), so no
profile or sweep value reaches a shell. The only shell is the sbatch script submitit writes;
its `#SBATCH` values are quoted by submitit, and the profile's `setup` lines are the user's
own commands, run as written by design.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from ltsweep.engine import slurm_nodes
from ltsweep.engine.ray_node import ray_ports, render_node_bootstrap, stop_job_ray
from ltsweep.engine.slurm_nodes import ACTIVE_STATES, job_state_now
from ltsweep.engine.slurm_record import (
    LOG_SUBDIR,
    SLURM_JSON,
    add_workers,
    now,
    read_record,
    read_workers,
    update_record,
)
from ltsweep.engine.sweep_job import Driver, SweepJob
from ltsweep.engine.worker_job import WorkerJob
from ltsweep.store.atomic import write_json
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.cluster_profile import ClusterProfile, load_profile
from ltsweep.sweep.schema import load_sweep

__all__ = [  # the submit side, and what tests and the CLI reach through this module
    "ACTIVE_STATES",
    "JobActive",
    "SweepJob",
    "cancel",
    "executor_parameters",
    "job_state",
    "load_job",
    "make_executor",
    "ray_ports",
    "read_record",
    "render_node_bootstrap",
    "requeue_count",
    "sbatch_script",
    "stop_job_ray",
    "submit_sweep",
    "submit_workers",
]


# --- pure pieces: executor parameters, sbatch text (the Ray side: ray_node.py) -----------------


def executor_parameters(profile: ClusterProfile, job_name: str = "ltsweep") -> dict[str, Any]:
    """submitit SlurmExecutor parameters for a profile: one task per node, requeueable."""
    extra: dict[str, Any] = {"requeue": True}
    if profile.no_kill:  # SLURM keeps the job, on the nodes left, when one of them fails
        extra["no_kill"] = True
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
        # a node that fails (its node check, say) ends the job at once, not after a timeout;
        # with no_kill, a node that is lost (SLURM marks it DOWN) ends only its own task
        "srun_args": ["--kill-on-bad-exit=1"] + (["--no-kill"] if profile.no_kill else []),
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
    max_num_timeout: int | None = None,
) -> submitit.SlurmExecutor:
    python = shlex.quote(profile.python) if profile.python else None
    timeouts = profile.max_requeues if max_num_timeout is None else max_num_timeout
    ex = cls(folder=folder, max_num_timeout=timeouts, python=python)
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


# --- folders the job's nodes must see -----------------------------------------------------------

#: folders that are each machine's own on any cluster: a job's nodes never see the submit
#: host's copy (an empty one of the same name at most), so a run folder there loses the job
NODE_LOCAL_ROOTS = ("/tmp", "/dev/shm", "/run", "/var/run")
#: filesystem types every node of a cluster can mount: a folder on one is shared, wherever
SHARED_FS_TYPES = frozenset(
    "nfs nfs4 lustre gpfs beegfs cifs smb3 ceph glusterfs panfs wekafs afs 9p virtiofs".split()
)
MOUNTS = Path("/proc/self/mounts")


def _mount_type(path: Path) -> str | None:
    """The filesystem type of the mount `path` lies on (the longest mount point above it)."""
    try:
        lines = MOUNTS.read_text().splitlines()
    except OSError:
        return None
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def node_local_root(path: str | os.PathLike[str]) -> Path | None:
    """The node-local folder `path` lies under (/tmp, /dev/shm, /run, $TMPDIR), or None.

    None too when a network filesystem is mounted there (it is then shared after all).
    """
    p = Path(os.path.abspath(path))
    tmpdir = os.environ.get("TMPDIR")
    roots = [Path(r) for r in NODE_LOCAL_ROOTS]
    if tmpdir and Path(tmpdir).is_absolute() and Path(tmpdir) != Path("/"):
        roots.append(Path(os.path.abspath(tmpdir)))
    for root in roots:
        if p == root or root in p.parents:
            kind = _mount_type(p)
            if kind is not None and (kind in SHARED_FS_TYPES or kind.startswith("fuse.")):
                return None
            return root
    return None


def check_shared_folders(
    run_dir: Path,
    cache_dir: Path,
    profile: ClusterProfile,
    warn: Callable[[str], None] | None = None,
) -> None:
    """The run folder, the cache and the nodes' python must be seen by every node of the job.

    A path under a node-local folder (`node_local_root`) is refused for a sweep of several
    nodes (a job of several, or worker jobs): each node would see its own empty folder, or no
    python at all, the job would fail without a word where the user looks (SLURM cannot even
    write the job's log there), and its rows would be lost. A one-node job may run on this
    very machine (a one-node test cluster does), so there it is a warning through `warn`.
    """
    python = profile.python or sys.executable
    checked = [("--run-dir", run_dir), ("--cache-dir (or LTSWEEP_CACHE)", cache_dir)]
    if os.path.isabs(python):
        checked.append(("python (the profile's `python`, or the one that submits)", Path(python)))
    local = [
        (what, path, root)
        for what, path in checked
        for root in [node_local_root(path)]
        if root is not None
    ]
    if not local:
        return
    what, path, root = local[0]
    also = f" (so is {local[1][1]})" if len(local) > 1 else ""
    line = (
        f"{what}: {path} is under {root}, which each node of a SLURM job has for itself{also}: "
        "the job's nodes cannot see it; put it on a shared filesystem every node mounts "
        "(a home, project or scratch folder)"
    )
    if profile.nodes > 1 or profile.worker_jobs > 0:
        raise SpecError(line)
    if warn is not None:
        warn(f"warning: {line}, unless the job runs on this machine")


def unseen_run_folder(run_dir: str | os.PathLike[str]) -> str | None:
    """Why the recorded job left nothing in the run folder, once it ended: its nodes could not
    see the folder (SLURM writes each task's log there first: no log, no folder); else None.

    Only a FAILED job is judged: one still waiting or running may write its logs yet, and one
    cancelled before it started never had any.
    """
    record = read_record(run_dir)
    if record is None:
        return None
    state = job_state(run_dir)
    if state != "FAILED":
        return None
    folder = Path(record["log_folder"])
    if any(folder.glob(f"{record['job_id']}_*_log.*")):
        return None
    return (
        f"SLURM job {record['job_id']} ended {state} without writing its log into "
        f"{folder}: the job's nodes cannot see the run folder {Path(run_dir)}; put it on a "
        "shared filesystem every node mounts (--run-dir) and run again"
    )


# --- the run record: run_dir/slurm.json ---------------------------------------------------------


# --- submitting, watching, cancelling -----------------------------------------------------------


def submit_sweep(
    sweep_path: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    profile: ClusterProfile | str | os.PathLike[str],
    *,
    driver: Driver | None = None,
    command: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> submitit.Job[Any]:
    """Submit the sweep as one SLURM job; record it in run_dir/slurm.json and return the job.

    Refuses (JobActive) while the job recorded for run_dir still runs or waits. `command`,
    the user's submitting command line, is recorded for `ltsweep status` to repeat. A run
    folder or cache the job's nodes cannot see is refused (`check_shared_folders`; `warn`
    gets the warning of a one-node job).

    The sweep is validated and frozen here (a bad file fails before queueing, and editing
    it later does not change a queued job). `driver` replaces ray_driver.run_sweep (tests).
    """
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
    if shutil.which("sbatch") is None:  # before anything is written: no empty run folder
        raise SpecError(
            "--cluster: no `sbatch` on PATH, so SLURM cannot be reached from this machine "
            "(run without --cluster to use a local Ray)"
        )
    check_shared_folders(run, cache, prof, warn)
    created = not run.exists()
    run.mkdir(parents=True, exist_ok=True)
    executor = make_executor(prof, run / LOG_SUBDIR / "%j", job_name=f"ltsweep-{sweep.name}")
    try:
        job = executor.submit(SweepJob(sweep, run, cache, prof, driver=driver))
    except BaseException:
        if created:  # a refused submission leaves no run folder behind
            shutil.rmtree(run, ignore_errors=True)
        raise
    previous = list(earlier.get("previous_jobs", []))
    if earlier:
        previous.append({"job_id": earlier["job_id"], "state": job_state(run) or "unknown"})
    write_json(
        run / SLURM_JSON,
        {
            "job_id": job.job_id,
            "previous_jobs": previous,
            "log_folder": str(job.paths.folder),
            "submitted_at": now(),
            "sweep_path": str(Path(sweep_path).resolve()),
            "cache_dir": str(cache),
            "profile": prof.model_dump(mode="json"),
            "requeues": 0,
            "command": command,
        },
    )
    if prof.worker_jobs:  # once the record names the job they join
        submit_workers(run, prof.worker_jobs, prof, for_job=str(job.job_id), sweep_name=sweep.name)
    return job


def worker_profile(profile: ClusterProfile) -> ClusterProfile:
    """A worker job's allocation: one node of the profile's shape, for worker_time_limit."""
    return profile.model_copy(
        update={"nodes": 1, "time_limit": profile.worker_time_limit or profile.time_limit}
    )


def submit_workers(
    run_dir: str | os.PathLike[str],
    jobs: int,
    profile: ClusterProfile | None = None,
    *,
    for_job: str | None = None,
    sweep_name: str | None = None,
) -> str:
    """Submit `jobs` one-node worker jobs (one SLURM array) that join the run's sweep job;
    record them in run_dir/workers.json and return the array's job id.

    `profile` defaults to the one the sweep's job was submitted with. Refused (SpecError)
    without a recorded sweep job, or once it has ended: there would be nothing to join.
    A worker at its time limit is not requeued: its unit is retried on another node.
    """
    if jobs < 1:
        raise SpecError(f"--jobs: {jobs} (a number of worker jobs >= 1)")
    run = Path(run_dir).resolve()
    record = read_record(run)
    if record is None:
        raise SpecError(
            f"{run}: no SLURM job recorded (slurm.json missing): submit the sweep first"
        )
    head_id = for_job or str(record["job_id"])
    if for_job is None:
        state = job_state_now(head_id)
        if state not in ACTIVE_STATES:
            raise SpecError(
                f"{run}: the sweep's SLURM job {head_id} is {state or 'unknown to SLURM'}: "
                "worker jobs would have nothing to join; run the sweep again to resume it"
            )
    prof = profile or ClusterProfile.model_validate(record["profile"])
    if shutil.which("sbatch") is None:
        raise SpecError("no `sbatch` on PATH, so SLURM cannot be reached from this machine")
    cache = Path(record.get("cache_dir") or run / ".cache")
    check_shared_folders(run, cache, prof.model_copy(update={"worker_jobs": jobs}))
    name = sweep_name or Path(record.get("sweep_path", "sweep")).stem
    shape = worker_profile(prof)
    executor = _new_executor(
        submitit.SlurmExecutor, shape, run / LOG_SUBDIR / "%j", f"ltsweep-{name}-worker", 0
    )
    executor.update_parameters(array_parallelism=jobs)
    submitted = executor.map_array(WorkerJob(run, cache, prof), list(range(jobs)))
    array_id = str(submitted[0].job_id).split("_", 1)[0]
    add_workers(run, array_id, jobs, head_id)
    return array_id


def worker_states(run_dir: str | os.PathLike[str]) -> dict[str, int]:
    """{SLURM state: how many} over the worker jobs of the run's current sweep job (every
    task of every array); tasks SLURM no longer knows are counted as "ENDED"."""
    counts: dict[str, int] = {}
    current = str((read_record(run_dir) or {}).get("job_id"))
    for entry in read_workers(run_dir):
        if str(entry.get("for_job")) != current:  # they joined an earlier job of the run
            continue
        lines = slurm_nodes.slurm_output(
            ["squeue", "-h", "-r", "-j", str(entry["job_id"]), "-o", "%T"]
        )
        live = [line.strip() for line in lines.splitlines() if line.strip()]
        if not live:
            acct = slurm_nodes.slurm_output(
                ["sacct", "-j", str(entry["job_id"]), "-n", "-X", "-P", "-o", "State"]
            )
            live = [line.split()[0] for line in acct.splitlines() if line.strip()]
        for state in live:
            counts[state] = counts.get(state, 0) + 1
        missing = int(entry.get("tasks", 0)) - len(live)
        if missing > 0:
            counts["ENDED"] = counts.get("ENDED", 0) + missing
    return counts


class JobActive(RuntimeError):
    """The run folder's recorded job still runs or waits: a second job would race it."""


def load_job(run_dir: str | os.PathLike[str]) -> submitit.Job[Any] | None:
    """The submitit job recorded in run_dir/slurm.json (for .result(), .state), or None."""
    record = read_record(run_dir)
    if record is None:
        return None
    return submitit.SlurmJob(folder=record["log_folder"], job_id=str(record["job_id"]))


def job_state(run_dir: str | os.PathLike[str]) -> str | None:
    """SLURM's state of the recorded job (PENDING, RUNNING, COMPLETED, ...), or None if there
    is no record or SLURM does not know the job.

    (`slurm_nodes.job_state_now`: squeue's live view, then sacct.)
    """
    record = read_record(run_dir)
    if record is None:
        return None
    return job_state_now(str(record["job_id"]))


def requeue_count(run_dir: str | os.PathLike[str]) -> int:
    """How often the recorded job was requeued, by anyone: SLURM's own restart count
    (`scontrol show job`: Restarts=N) while the controller knows the job, else the count its
    last run recorded. Counts `scontrol requeue`, node failures and ltsweep's own requeues
    at the time limit alike (the record's `requeues` counts only the latter)."""
    record = read_record(run_dir) or {}
    if not record:
        return 0
    shown = slurm_nodes.slurm_output(["scontrol", "-o", "show", "job", str(record["job_id"])])
    live = [int(w.split("=", 1)[1]) for w in shown.split() if w.startswith("Restarts=")]
    stored = max(int(record.get("restart_count", 0)), int(record.get("requeues", 0)))
    return max(live + [stored])


def cancel(run_dir: str | os.PathLike[str]) -> str | None:
    """scancel the recorded job and its worker jobs; return its id (None without a record).
    Deletes nothing: the results and the cache stay, and a later run resumes from them."""
    record = read_record(run_dir)
    if record is None:
        return None
    jid = str(record["job_id"])
    try:
        workers = [str(w["job_id"]) for w in read_workers(run_dir)]
    except SpecError:  # a damaged worker record must not keep the sweep's job running
        workers = []
    subprocess.run(["scancel", jid, *workers], check=True, timeout=60)
    update_record(Path(run_dir), cancelled_at=now())
    return jid
