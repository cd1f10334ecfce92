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
