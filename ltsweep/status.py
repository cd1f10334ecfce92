"""What `ltsweep status` says of a run folder: units per stage (done, running, failed, to do),
where half-done pre-trains stand, whether its driver runs, and its SLURM job's state and
requeues. Reads the run folder, the cache and (for a SLURM run) squeue/sacct; imports no
torch and no ray (submitit only for a run with a SLURM record).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ltsweep.planning.plan import make_plan
from ltsweep.planning.state import assess
from ltsweep.store.curves import progress_of
from ltsweep.sweep.schema import SpecError, Sweep


def status_text(run_dir: Path, sweep: Sweep, cache_dir: Path) -> str:
    """What `ltsweep status` prints for a run folder (its frozen sweep and its cache)."""
    out: list[str] = []
    assessment = assess(make_plan(sweep), run_dir, cache_dir, verify=False)
    counts = assessment.counts()
    job = _slurm_job(run_dir)
    # the job's driver runs only while SLURM runs the job (its heartbeat outlives a kill -9)
    job_ended = job is not None and job["state"] not in ("RUNNING", "unknown")
    running = {} if job_ended else _driver_running(run_dir)
    out.append(f"sweep {sweep.name!r} in {run_dir}")
    out.append(f"{'stage':<10} {'done':>6} {'running':>8} {'failed':>7} {'to do':>7} {'total':>7}")
    for stage, c in counts.items():
        if not c["total"]:
            continue
        r = running.get(stage, 0)
        # a unit another run computed is still to do here: the next run copies its row
        todo = c["todo"] + c.get("cached", 0)
        todo = max(0, todo - r - (c["failed"] if stage != "pretrain" else 0))
        out.append(f"{stage:<10} {c['done']:>6} {r:>8} {c['failed']:>7} {todo:>7} {c['total']:>7}")
    for unit in assessment.pretrains_todo:  # half-done pre-trains: where their curves stand
        epoch, total = progress_of(cache_dir, unit.key)
        if epoch:
            out.append(
                f"  pre-train {unit.method} gamma {unit.gamma:g} data seed {unit.data_seed}: "
                f"epoch {epoch} of {total}"
            )
    out.append("driver: not running" if job_ended else _driver_line(run_dir))
    if job is not None:
        out.append(_slurm_line(job))
    return "\n".join(out)


def job_only_text(run_dir: Path) -> str | None:
    """What status prints for a run folder whose SLURM job has not started yet (it holds the
    job's record, but no frozen sweep until the job's first node writes it); None if the
    folder holds no SLURM record."""
    job = _slurm_job(run_dir)
    if job is None:
        return None
    return f"run folder {run_dir}: no unit started yet\n{_slurm_line(job)}"


def _driver_info(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "driver.json").read_text())
    except (OSError, ValueError):
        return {}


def _driver_alive(info: dict) -> bool:
    if not info.get("running"):
        return False
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError):
            return False
        return True
    return time.time() - float(info.get("time", 0)) < 600  # another host: trust a recent heartbeat


def _driver_running(run_dir: Path) -> dict[str, int]:
    info = _driver_info(run_dir)
    return dict(info.get("units_running", {})) if _driver_alive(info) else {}


def _driver_line(run_dir: Path) -> str:
    info = _driver_info(run_dir)
    if not info:
        return "driver: never started"
    if _driver_alive(info):
        return f"driver: running (pid {info['pid']} on {info['host']})"
    return "driver: not running"


def _slurm_job(run_dir: Path) -> dict | None:
    """The run's SLURM job as status shows it (record, live state, requeues), or None."""
    if not (run_dir / "slurm.json").is_file():
        return None
    from ltsweep.engine import slurm  # submitit: only with a SLURM job

    check_record(run_dir, slurm.read_record(run_dir))
    from ltsweep.engine import slurm_nodes

    record = slurm.read_record(run_dir) or {}
    state = slurm.job_state(run_dir) or "unknown"
    job = {
        "record": record,
        "run_dir": run_dir,
        "state": state,
        "requeues": slurm.requeue_count(run_dir),
        "active_states": slurm.ACTIVE_STATES | {"unknown"},
        "reason": slurm_nodes.pending_reason(str(record.get("job_id"))),
        "nodes": None,
        "workers": slurm.worker_states(run_dir),
    }
    if state != "COMPLETED":  # a job that waits or ended short: are its nodes there?
        job["nodes"] = slurm_nodes.nodes_view(record)
    return job


def check_record(run_dir: Path, record: dict | None) -> None:
    if record is not None and not str(record.get("job_id", "")).strip():
        raise SpecError(f"{run_dir / 'slurm.json'}: not a SLURM record (no job_id)")


def _slurm_line(job: dict) -> str:
    """`SLURM job 12: RUNNING, requeued 2 time(s) (1 by ltsweep at its time limit)`; for a
    pending job, SLURM's reason (`PENDING (Resources; requeued 1 time(s))`); the job's nodes
    that are down; and, for a job that ended without finishing or waits for nodes that are
    down, the command that finishes what is missing on the nodes that are up."""
    from ltsweep.engine.slurm_nodes import finish_command

    record, state, requeues = job["record"], job["state"], job["requeues"]
    line = f"SLURM job {record.get('job_id')}: {state}"
    requeued = ""
    if requeues:
        own = int(record.get("requeues", 0))
        requeued = f"requeued {requeues} time(s)" + (
            f" ({own} by ltsweep at its time limit)" if own else ""
        )
    if job.get("reason"):
        line += f" ({job['reason']}" + (f"; {requeued}" if requeued else "") + ")"
    elif requeued:
        line += f", {requeued}"
    view = job.get("nodes")
    wanted = int((record.get("profile") or {}).get("nodes") or 0)
    short = view is not None and view.known and wanted > view.up
    if job.get("workers"):
        shown = ", ".join(f"{n} {s.lower()}" for s, n in sorted(job["workers"].items()))
        line += f"\nworker jobs: {shown}"
    if view is not None and view.down:
        line += f"\nnodes down: {', '.join(view.down)}"
        if view.job_nodes:
            line += f" (of its nodes {', '.join(view.job_nodes)})"
    if short:
        line += (
            f"\n{view.up} of the {wanted} nodes it asks for are up in partition {view.partition}"
        )
    if view is not None:
        again, local = finish_command(record, job.get("run_dir", "RUN"), view)
    else:
        again = record.get("command") or "ltsweep run SWEEP --cluster PROFILE --run-dir RUN"
        local = False
    if local:  # no node of the partition is up
        how = f"run it locally: `{again}` finishes what is missing"
    else:
        how = f"`{again}` finishes what is missing" + (" on the nodes that are up" if short else "")
    if state not in job["active_states"] and state != "COMPLETED":
        line += f"\nthe job ended {state}: {how}"
    elif state == "PENDING" and short:
        line += (
            "\nit waits for nodes that are down: "
            f"`ltsweep cancel {job.get('run_dir', 'RUN')}`, then {how}"
        )
    return line
