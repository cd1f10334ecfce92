"""How far a running unit is, for the driver's ETA: `progress.json` beside a baseline's
checkpoints, rewritten (atomically) after every epoch as {epoch, epochs, seconds}.

A pre-train's `curve.json` (`ltsweep.store.curves`) says the same for pre-trains. Both are a
view of the training, never an input to it: a missing or damaged file reads as "not known".
`seconds` are training seconds summed over resumptions, so a resumed unit's speed is its
own, not the time since the driver started it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ltsweep.store.atomic import write_json

PROGRESS = "progress.json"


def write_progress(folder: Path, epoch: int, epochs: int, seconds: float) -> None:
    write_json(Path(folder) / PROGRESS, {"epoch": epoch, "epochs": epochs, "seconds": seconds})


def read_progress(folder: Path) -> tuple[float, float] | None:
    """(share of the epochs done, training seconds they took), or None if not known."""
    try:
        blob = json.loads((Path(folder) / PROGRESS).read_text())
        return share(int(blob["epoch"]), int(blob["epochs"]), float(blob["seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def share(epoch: int, epochs: int, seconds: float) -> tuple[float, float] | None:
    """(epoch / epochs, seconds) when both say something, else None."""
    if epochs <= 0 or epoch <= 0 or seconds <= 0:
        return None
    return min(1.0, epoch / epochs), seconds
