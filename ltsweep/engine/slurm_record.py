"""A run's SLURM record, run_dir/slurm.json: which job runs the sweep, where it logs, what
happened to it (started, requeued, gave up). Written on the submit host and by the job's first
node through the shared run folder; read by `ltsweep status` and `cancel`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ltsweep.store.atomic import write_json
from ltsweep.sweep.base import SpecError

SLURM_JSON = "slurm.json"
#: the worker jobs submitted for the run (`ltsweep workers`), written by the submit host only
WORKERS_JSON = "workers.json"
LOG_SUBDIR = Path("logs") / "slurm"


def read_record(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """run_dir/slurm.json (job id, log folder, requeues, ...), or None if never submitted."""
    path = Path(run_dir) / SLURM_JSON
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise SpecError(f"{path}: unreadable SLURM record ({type(err).__name__})") from None
    if not isinstance(record, dict):
        raise SpecError(f"{path}: not a SLURM record (a JSON {type(record).__name__})")
    return record


def update_record(run_dir: Path, **fields: Any) -> None:
    record = read_record(run_dir) or {}
    record.update(fields)
    write_json(run_dir / SLURM_JSON, record)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_workers(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The run's worker jobs, oldest first: [{job_id, tasks, submitted_at, for_job}]; [] if
    none was submitted. A damaged file is an error naming it (it lists jobs to cancel)."""
    path = Path(run_dir) / WORKERS_JSON
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise SpecError(f"{path}: unreadable worker-job record ({type(err).__name__})") from None
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, list) or not all(isinstance(j, dict) and "job_id" in j for j in jobs):
        raise SpecError(f"{path}: not a worker-job record")
    return jobs


def add_workers(run_dir: Path, job_id: str, tasks: int, for_job: str) -> None:
    """Record a submitted array of `tasks` worker jobs, joining the sweep's job `for_job`."""
    jobs = read_workers(run_dir)
    jobs.append({"job_id": str(job_id), "tasks": tasks, "submitted_at": now(), "for_job": for_job})
    write_json(run_dir / WORKERS_JSON, {"jobs": jobs})
