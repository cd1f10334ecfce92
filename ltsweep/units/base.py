"""What the three unit kinds share: content keys, a label file's identity, where a unit runs,
and how its result rows are written (or its failure recorded).

A unit's key is a hash of everything that determines its output plus `FORMAT_VERSION`, never
of paths or the sweep's name: a unit done once, in any sweep sharing the cache, is found again,
and a changed setting never reuses a stale result. Imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from ltsweep.store import shared_rows
from ltsweep.store.results import unit_row, write_rows
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.schema import Resources, Sweep

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


def label_file(sweep: Sweep) -> dict[str, Any] | None:
    """{path, key, sha256, noise_rate} of the real noisy labels a cifar-n sweep trains on.

    None for symmetric noise. Content keys take the key and the sha256, not the path (keys
    never hold paths); units carry the absolute path so that a worker in another directory
    reads the same file. `noise_rate` is what stands for the cell's noise where a method's
    settings depend on it (`cell_noise`): `data.noisy_labels.noise_rate`, else measured.
    """
    labels = sweep.data.noisy_labels
    if sweep.grid.noise_type == "symmetric" or labels is None:
        return None
    path = labels.resolved_path()
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SpecError(f"data.noisy_labels.path: cannot read {path}: {err.strerror}") from None
    digest = hashlib.sha256(raw).hexdigest()
    rate = labels.noise_rate
    if rate is None:
        rate = measured_noise_rate(raw, path, labels.key, labels.clean_key)
    return {"path": str(path), "key": labels.key, "sha256": digest, "noise_rate": rate}


def measured_noise_rate(raw: bytes, path: Path, key: str, clean_key: str) -> float:
    """The share of the file's labels `key` that differ from its clean labels `clean_key`.

    Choice: over the whole file (CIFAR's 50,000 training images), not over a
    cell's long-tailed subset. It is the rate the label set is published at (CIFAR-10N
    worse_label: 40.2 %, aggre_label: 9.0 %, CIFAR-100N noisy_label: 40.2 %), one rate per
    file, so every cell of a sweep takes the same head mode and DivideMix settings, as every
    cell of one symmetric rate does; a subset's rate differs by about a point (worse_label
    at gamma 100: 38.9-39.4 %, measured). It is a flip rate, compared as is with the
    protocol's thresholds (symmetric noise nu flips nu (C-1)/C of the labels). numpy only: the
    plan needs it, and the plan imports no torch.
    """
    import io

    import numpy as np

    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            if clean_key not in archive.files:
                raise SpecError(
                    f"data.noisy_labels.clean_key: {path} has no array {clean_key!r} to measure "
                    f"the labels' noise rate against; set data.noisy_labels.noise_rate"
                )
            noisy, clean = archive[key], archive[clean_key]
    except (OSError, ValueError, KeyError) as err:
        raise SpecError(f"data.noisy_labels.path: cannot read {path}: {err}") from None
    if noisy.shape != clean.shape or noisy.size == 0:
        raise SpecError(
            f"data.noisy_labels: {path}[{key!r}] and [{clean_key!r}] differ in shape "
            f"({noisy.shape} vs {clean.shape})"
        )
    return float(np.mean(noisy != clean))


def cell_noise(noise: float, labels: dict[str, Any] | None) -> float:
    """The noise rate a cell's method settings are resolved at (PROTOCOL.md's nu).

    Symmetric noise: the grid's rate. cifar-n (grid.noise is 0 there): the label file's
    rate, so a 40 %-noise file is not treated as clean by the fine-tune head switch
    (PROTOCOL.md, Fine-tuning: "noise > 60 / 40 / 20 %: last FC only") nor by DivideMix's
    lambda_u, p_threshold and loss averaging (PROTOCOL.md, Baselines).
    """
    return float(labels["noise_rate"]) if labels is not None else noise


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

    # what one trial of this unit asks Ray for (`resources.<kind>`), set by the plan so that
    # the driver and the progress view read units, not the sweep; never hashed into `key`
    cpu: float = field(default=1.0, compare=False, kw_only=True)
    gpu: float = field(default=0.0, compare=False, kw_only=True)

    kind: ClassVar[str] = ""

    @property
    def stage(self) -> str:
        return self.kind

    @property
    def depends_on(self) -> str | None:
        """The key of the unit whose output this one reads first, if any."""
        return None


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
    # the sweep that planned it: its rows' `sweep` column, a failed row's too (not hashed)
    sweep_name: str = field(default="", compare=False, kw_only=True)

    table_stage: ClassVar[str] = ""  # the row's `stage`: two-stage | single-stage

    def own_columns(self) -> dict[str, Any]:
        """The columns every row of this kind fills from the unit itself (`columns` win)."""
        return {}

    def row(self, sweep: str, metrics: dict[str, Any], **columns: Any) -> Row:
        """The unit's row: its fields, `metrics` (NaN where missing), the measured `columns`."""
        return unit_row(sweep, self, self.table_stage, metrics, **(self.own_columns() | columns))


def asks(resources: Resources) -> dict[str, float]:
    """A unit's `cpu` and `gpu` fields from its kind's `resources.<kind>`."""
    return {"cpu": resources.cpu, "gpu": resources.gpu}


@dataclass(frozen=True)
class RunContext:
    """Where a unit runs: its sweep, the run folder its rows go to, and the shared cache."""

    sweep: Sweep
    run_dir: Path
    cache_dir: Path
    #: where a unit reports progress as it happens (the driver's Tune trial); None: nowhere
    report: Callable[[dict[str, Any]], None] | None = None

    @property
    def results_dir(self) -> Path:
        return self.run_dir / "results"


def now() -> str:
    """A row's `started` column: ISO 8601, UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def worker_host() -> str:
    """A row's `host` column: the node that computed the unit. Read by the unit, in its
    worker, when it starts, and carried into its row, so the column never names the
    node that merely wrote or collected the row (the driver's)."""
    return socket.gethostname()


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
    shared_rows.keep(ctx.cache_dir, name, done)  # any run sharing the cache reuses them
    return done
