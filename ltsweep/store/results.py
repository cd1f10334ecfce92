"""The results table: one typed row per finished unit, Parquet files read back with pandas.

Each Tune trial writes its rows as one Parquet file under `<run>/results/`, atomically, so
a killed worker leaves either the whole file or nothing. Rows are keyed by `unit_key`;
a unit whose key is stored is done and is never run again by that run folder.
pandas is imported only by the
functions that return DataFrames, so `ltsweep status` (which reads keys) stays quick.
"""

from __future__ import annotations

import math
import os
import re
import socket
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ltsweep.store.atomic import atomic_path, move_aside
from ltsweep.version import __version__

SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("unit_key", pa.string()),
        ("pretrain_key", pa.string()),  # null for single-stage units
        ("stage", pa.string()),  # "two-stage" | "single-stage"
        ("method", pa.string()),  # SSL method (two-stage) or baseline name (single-stage)
        ("dataset", pa.string()),
        ("gamma", pa.float64()),
        ("noise", pa.float64()),
        ("noise_type", pa.string()),
        ("loss", pa.string()),  # ce | ce+sl | la | la+sl (or the baseline's own, e.g. elr)
        ("head", pa.string()),  # full | last | linear (two-stage); "" for single-stage
        ("seed", pa.int64()),
        ("data_seed", pa.int64()),
        ("epochs", pa.int64()),  # epochs of the stage that produced the row
        ("pretrain_epochs", pa.int64()),  # epochs of the encoder it used (0 for single-stage)
        ("acc", pa.float64()),  # top-1 on the balanced clean test set, in [0, 1]
        ("acc_many", pa.float64()),  # classes with > 100 training samples (NaN if none)
        ("acc_medium", pa.float64()),  # 20..100
        ("acc_few", pa.float64()),  # < 20
        ("class_acc", pa.list_(pa.float64())),
        (
            "actual_noise",
            pa.float64(),
        ),  # fraction of training labels that differ from the clean ones
        ("n_train", pa.int64()),
        ("knn_acc", pa.float64()),  # kNN monitor of the encoder (two-stage), NaN otherwise
        ("clean_fraction", pa.float64()),  # DivideMix: share judged clean; NaN otherwise
        ("clean_precision", pa.float64()),  # DivideMix: precision of that share; NaN otherwise
        ("status", pa.string()),  # "ok" | "failed"
        ("error", pa.string()),
        ("seconds", pa.float64()),
        ("started", pa.string()),  # ISO 8601, UTC
        ("host", pa.string()),
        ("version", pa.string()),
    ]
)
COLUMNS = SCHEMA.names
_DEFAULTS: dict[str, Any] = {
    "pretrain_key": None,
    "head": "",
    "knn_acc": float("nan"),
    "clean_fraction": float("nan"),
    "clean_precision": float("nan"),
    "error": "",
    "status": "ok",
    "pretrain_epochs": 0,
    "class_acc": [],
}


#: what a fine-tune or baseline unit says of itself, copied into its row
UNIT_FIELDS = (
    "method",
    "dataset",
    "gamma",
    "noise",
    "noise_type",
    "loss",
    "seed",
    "data_seed",
    "epochs",
)
METRICS = ("acc", "acc_many", "acc_medium", "acc_few")


def unit_row(
    sweep: str, unit: Any, stage: str, metrics: Mapping[str, Any], **columns: Any
) -> dict[str, Any]:
    """The row of `unit` (a fine-tune or baseline unit): its own fields, its metrics (NaN where
    missing, as for a failed unit), where and by which version it ran, and the stage's own
    `columns` (pretrain_key, head, knn_acc, timings, ...; status "ok" unless given)."""
    row = {"sweep": sweep, "unit_key": unit.key, "stage": stage, "status": "ok", "error": ""}
    row |= {f: getattr(unit, f) for f in UNIT_FIELDS}
    row |= {m: metrics.get(m, math.nan) for m in METRICS}
    row |= {"class_acc": metrics.get("class_acc", []), "host": socket.gethostname()}
    return row | {"version": __version__} | columns


def write_rows(
    directory: str | os.PathLike[str], name: str, rows: Iterable[Mapping[str, Any]]
) -> Path:
    """Write `rows` as `<directory>/<name>.parquet` atomically; unknown keys are an error."""
    rows = [dict(_DEFAULTS, **r) for r in rows]
    for r in rows:
        extra = set(r) - set(COLUMNS)
        if extra:
            raise KeyError(f"not result columns: {sorted(extra)}")
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    path = Path(directory) / f"{name}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)  # a flipped byte is noticed
    return path


def _check_file(path: Path) -> str | None:
    """Why the results file at `path` cannot be read as results, or None if it can."""
    try:
        table = pq.read_table(path, schema=SCHEMA, page_checksum_verification=True)
    except Exception as err:  # noqa: BLE001 - truncated, foreign, unreadable: all untrusted
        text = re.sub(r"^Could not open Parquet input source '[^']*': ", "", str(err))
        text = text.splitlines()[0].split(". ")[0] if text else ""
        return f"{type(err).__name__}: {text}".rstrip(": ")
    for column in ("unit_key", "status"):
        if table.column(column).null_count:
            return f"null {column} values"
    return None


_WARNED: set[str] = set()


def warn(message: str) -> None:
    """One line on stderr, once per process and message."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"ltsweep: warning: {message}", file=sys.stderr, flush=True)


def measured_noise(df: Any) -> Any:
    """Rows trained on real noisy labels (noise_type cifar-n) take the noise rate measured on
    their training labels (`actual_noise`, to 0.1 %) as their `noise`.

    Why: their grid noise is 0, a placeholder (the labels are what they are). Shown at 0 %,
    CIFAR-10N's worse labels (~40 % wrong) would sit in the clean column of every table and
    figure, and be compared with the paper's clean numbers.
    """
    if "noise_type" not in df.columns or "actual_noise" not in df.columns:
        return df
    real = df["noise_type"].eq("cifar-n") & df["actual_noise"].notna()
    if not real.any():
        return df
    out = df.copy()
    out.loc[real, "noise"] = out.loc[real, "actual_noise"].astype(float).round(3)
    return out


def result_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The readable results files under `directory`, in name order; an unreadable one (truncated,
    foreign, not Parquet) is skipped with a one-line warning (`ltsweep run` moves it aside)."""
    good = []
    for f in sorted(Path(directory).glob("*.parquet")):
        problem = _check_file(f)
        if problem is None:
            good.append(f)
        else:
            warn(f"{f}: unreadable results file ({problem}); skipped")
    return good


def quarantine_results(directory: str | os.PathLike[str]) -> list[tuple[Path, Path, str]]:
    """Move every unreadable results file of `directory` to `directory/.quarantine/`; return
    (file, where it went, why) for each. The units it held are then missing and run again."""
    moved = []
    for f in sorted(Path(directory).glob("*.parquet")):
        problem = _check_file(f)
        if problem is not None:
            moved.append((f, move_aside(f, directory), problem))
    return moved


def read_table(directory: str | os.PathLike[str]) -> pa.Table:
    """All result rows stored under `directory` (empty table if none); unreadable files are
    skipped with a warning."""
    files = result_files(directory)
    if not files:
        return SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files])


def stored_keys(directory: str | os.PathLike[str], status: str = "ok") -> set[str]:
    keys: set[str] = set()
    for f in result_files(directory):
        t = pq.read_table(f, columns=["unit_key", "status"])
        for k, s in zip(
            t.column("unit_key").to_pylist(), t.column("status").to_pylist(), strict=True
        ):
            if s == status:
                keys.add(k)
    return keys


class NotARunFolder(FileNotFoundError):
    """`load_results` of a folder that holds no results table."""


def load_results(run_dir: str | os.PathLike[str], include_failed: bool = False):
    """The results of a run folder as a pandas DataFrame, one row per unit.

    Failed units are left out unless `include_failed`; a unit that failed and later
    succeeded appears once, as its success.
    """
    import pandas as pd

    results = Path(run_dir) / "results"
    if not results.is_dir():
        raise NotARunFolder(f"{run_dir}: not a run folder (no results/ in it)")
    df = read_table(results).to_pandas()
    # one kind of missing value (pd.isna) for what does not apply: a single-stage unit's head
    # and pre-train key, a success's error, a number; `started` as a UTC timestamp
    for column in ("head", "error"):
        df[column] = df[column].mask(df[column] == "")
    df["started"] = pd.to_datetime(df["started"], utc=True, errors="coerce", format="ISO8601")
    if not include_failed:
        df = df[df["status"] == "ok"]
    else:
        ok = set(df.loc[df["status"] == "ok", "unit_key"])
        df = df[(df["status"] == "ok") | ~df["unit_key"].isin(ok)]
    return pd.DataFrame(df).reset_index(drop=True)


def prune_failed(directory: str | os.PathLike[str]) -> int:
    """Delete failure records whose units have all succeeded since; return how many files.

    A failed unit is retried by the next run; once it succeeds, its old `failed-*` file
    would be a second row for the same unit, so it goes.
    """
    ok = stored_keys(directory, "ok")
    removed = 0
    for f in result_files(directory):
        if not f.name.startswith("failed-"):
            continue
        keys = pq.read_table(f, columns=["unit_key"]).column("unit_key").to_pylist()
        if keys and set(keys) <= ok:
            f.unlink()
            removed += 1
    return removed
