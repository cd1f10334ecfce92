"""Result rows kept in the cache, so that a unit done once, in any run sharing the cache, is
not computed again.

Every successful row a unit writes into its run's `results/` is also kept under
`<cache>/rows/` (same file name, atomically). A later run whose plan holds that unit, but
whose own `results/` does not, copies the row into its `results/` instead of scheduling the
unit (`adopt`): the row keeps its `sweep` (the run that computed it: where it came from), its
`seconds` (the real compute time) and its `started`. Failed rows are never kept. Imports no
torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ltsweep.store.results import SCHEMA, result_files, write_rows

ROWS = "rows"


def rows_dir(cache: Path) -> Path:
    return Path(cache) / ROWS


def keep(cache: Path, name: str, rows: list[dict[str, Any]]) -> None:
    """Keep a run's successful `rows` (written as `<run>/results/<name>.parquet`) in the cache."""
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    if ok:
        write_rows(rows_dir(cache), name, ok)


def cached_keys(cache: Path) -> set[str]:
    """Unit keys with a kept row (reads one column per file)."""
    keys: set[str] = set()
    for f in result_files(rows_dir(cache)):
        keys.update(pq.read_table(f, columns=["unit_key"]).column("unit_key").to_pylist())
    return keys


def adopt(cache: Path, results: Path, keys: set[str]) -> int:
    """Copy the kept rows of `keys` into `results/` (one file); return how many rows."""
    if not keys:
        return 0
    found: dict[str, dict[str, Any]] = {}
    for f in result_files(rows_dir(cache)):
        if keys.isdisjoint(pq.read_table(f, columns=["unit_key"]).column("unit_key").to_pylist()):
            continue
        for row in pq.read_table(f, schema=SCHEMA).to_pylist():
            if row["unit_key"] in keys and row["status"] == "ok":
                found.setdefault(row["unit_key"], row)
    if found:
        digest = hashlib.sha256("".join(sorted(found)).encode()).hexdigest()[:16]
        write_rows(results, f"reused-{digest}", [found[k] for k in sorted(found)])
    return len(found)
