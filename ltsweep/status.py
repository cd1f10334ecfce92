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
    return {
        "record": slurm.read_record(run_dir) or {},
        "state": slurm.job_state(run_dir) or "unknown",
        "requeues": slurm.requeue_count(run_dir),
        "active_states": slurm.ACTIVE_STATES | {"unknown"},
    }


def check_record(run_dir: Path, record: dict | None) -> None:
    if record is not None and not str(record.get("job_id", "")).strip():
        raise SpecError(f"{run_dir / 'slurm.json'}: not a SLURM record (no job_id)")


def _slurm_line(job: dict) -> str:
    """`SLURM job 12: RUNNING, requeued 2 time(s) (1 by ltsweep at its time limit)`, and for
    a job that ended without finishing, the command that finishes what is missing."""
    record, state, requeues = job["record"], job["state"], job["requeues"]
    line = f"SLURM job {record.get('job_id')}: {state}"
    if requeues:
        own = int(record.get("requeues", 0))
        line += f", requeued {requeues} time(s)" + (
            f" ({own} by ltsweep at its time limit)" if own else ""
        )
    if state not in job["active_states"] and state != "COMPLETED":
        again = record.get("command") or "ltsweep run SWEEP --cluster PROFILE --run-dir RUN"
        line += f"\nthe job ended {state}: `{again}` finishes what is missing"
    return line
