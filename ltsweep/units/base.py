"""What the three unit kinds share: content keys, a label file's identity, where a unit runs,
and how its result rows are written (or its failure recorded).

A unit's key is a hash of everything that determines its output plus `FORMAT_VERSION`, never
of paths or the sweep's name: a unit done once, in any sweep sharing the cache, is found again,
and a changed setting never reuses a stale result. Imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from ltsweep.store.results import unit_row, write_rows
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.schema import Sweep

#: bump when stored outputs change meaning, so old cache entries are not reused
FORMAT_VERSION = 1

Row = dict[str, Any]


def content_key(kind: str, fields: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """The key of a unit of `kind` whose output `fields` determine (plus the format version).

    `labels`, the cifar-n label file a unit trains on (`label_file`), adds its identity: which
    array, and the file's content (never its path). Only then: the keys of symmetric-noise
    sweeps stay as they were before real noisy labels existed.
    """
    if labels is not None:
        fields = {**fields, "noisy_labels": {"key": labels["key"], "sha256": labels["sha256"]}}
    blob = json.dumps(
        {"kind": kind, "format": FORMAT_VERSION, **fields}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def label_file(sweep: Sweep) -> dict[str, str] | None:
    """{path, key, sha256} of the real noisy labels a cifar-n sweep trains on; None otherwise.

    Content keys take the key and the sha256, not the path (keys never hold paths); units
    carry the absolute path so that a worker in another directory reads the same file.
    """
    labels = sweep.data.noisy_labels
    if sweep.grid.noise_type == "symmetric" or labels is None:
        return None
    path = labels.resolved_path()
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise SpecError(f"data.noisy_labels.path: cannot read {path}: {err.strerror}") from None
    return {"path": str(path), "key": labels.key, "sha256": digest}


@dataclass(frozen=True)
class Unit:
    """What every unit is: its content key, its method, and the data it learns from.

    A kind's dataclass adds its own fields and sets `kind` (its module's KIND).
    """

    key: str
    method: str  # the SSL method (pre-train, fine-tune) or the baseline's name
    dataset: str
    gamma: float
    data_seed: int  # the long-tailed subset (and a pre-train's initialisation)

    kind: ClassVar[str] = ""

    @property
    def stage(self) -> str:
        return self.kind

    @property
    def depends_on(self) -> str | None:
        """The key of the unit whose output this one reads first, if any."""
        return None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RowUnit(Unit):
    """A unit of one grid cell with a row in the results table: a fine-tune trial, a baseline.

    Both train on the noisy labels of their cell (`ltsweep.data.cell`), the same for both.
    """

    noise: float
    noise_type: str
    seed: int  # the noise's seed, and the training's
    # noise_type cifar-n: {path, key, sha256} of the label file (its key and sha256 are in `key`)
    label_file: dict[str, str] | None = field(default=None, compare=False, hash=False, kw_only=True)

    table_stage: ClassVar[str] = ""  # the row's `stage`: two-stage | single-stage

    def own_columns(self) -> dict[str, Any]:
        """The columns every row of this kind fills from the unit itself (`columns` win)."""
        return {}

    def row(self, sweep: str, metrics: dict[str, Any], **columns: Any) -> Row:
        """The unit's row: its fields, `metrics` (NaN where missing), the measured `columns`."""
        return unit_row(sweep, self, self.table_stage, metrics, **(self.own_columns() | columns))


@dataclass(frozen=True)
class RunContext:
    """Where a unit runs: its sweep, the run folder its rows go to, and the shared cache."""

    sweep: Sweep
    run_dir: Path
    cache_dir: Path

    @property
    def results_dir(self) -> Path:
        return self.run_dir / "results"


def now() -> str:
    """A row's `started` column: ISO 8601, UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_rows(
    ctx: RunContext,
    name: str,
    rows: Callable[[], list[Row]],
    failed_rows: Callable[[str], list[Row]],
) -> list[Row]:
    """Compute `rows()` and write them as `<run>/results/<name>.parquet`; return them.

    If `rows()` raises, the failure is recorded, never lost: `failed_rows(message)` are written
    as `failed-<name>.parquet`, the traceback as `logs/<name>.error.txt`, and the error is
    raised again so the driver counts (and the next run retries) the unit.
    """
    try:
        done = rows()
    except Exception as err:  # noqa: BLE001 - recorded, then raised again
        (ctx.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (ctx.run_dir / "logs" / f"{name}.error.txt").write_text(traceback.format_exc())
        write_rows(ctx.results_dir, f"failed-{name}", failed_rows(f"{type(err).__name__}: {err}"))
        raise
    write_rows(ctx.results_dir, name, done)
    return done
