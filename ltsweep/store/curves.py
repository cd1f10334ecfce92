"""A pre-train's curve: one record per epoch (loss, kNN accuracy, learning rate, and the
training seconds so far).

The pre-train's worker rewrites `<cache>/pretrain/<key>/curve.json` after every epoch
(atomically, the whole curve: a resumed pre-train redoes the epochs after its last
checkpoint, and their records are replaced, never duplicated). `ltsweep status` reads the
last epoch of a half-done pre-train from it, `ltsweep.load_pretrains` the whole curves. A
damaged curve reads as empty: it is a view of the training, never an input to it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ltsweep.store.atomic import write_json
from ltsweep.store.cache import pretrain_dir

CURVE = "curve.json"
#: the fields of one epoch's record
FIELDS = ("epoch", "loss", "knn_acc", "lr", "seconds")


def curve_path(cache: Path, key: str) -> Path:
    return pretrain_dir(cache, key) / CURVE


def write_curve(cache: Path, key: str, epochs: int, records: list[dict[str, Any]]) -> None:
    """Store the curve so far (`epochs`: how many the pre-train will run)."""
    clean = [{f: _plain(r.get(f)) for f in FIELDS} for r in records]
    write_json(curve_path(cache, key), {"epochs": epochs, "records": clean})


def read_curve(cache: Path, key: str) -> tuple[int, list[dict[str, Any]]]:
    """(epochs planned, records so far); (0, []) if there is none or it is damaged."""
    try:
        blob = json.loads(curve_path(cache, key).read_text())
        records = [
            {f: r.get(f) for f in FIELDS} for r in blob["records"] if isinstance(r["epoch"], int)
        ]
        return int(blob["epochs"]), records
    except (OSError, ValueError, KeyError, TypeError):
        return 0, []


def _plain(value: Any) -> Any:
    """JSON has no NaN: a missing number (no kNN measured that epoch) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def progress_of(cache: Path, key: str) -> tuple[int, int]:
    """(last epoch on record, epochs planned) of a pre-train; (0, 0) if none is on record."""
    epochs, records = read_curve(cache, key)
    return (max(r["epoch"] for r in records), epochs) if records else (0, 0)
