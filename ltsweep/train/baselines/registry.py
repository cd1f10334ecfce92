"""The baseline trainers by name: each name's params dataclass and `Method`.

The names are those of `ltsweep.sweep.baseline_settings.BASELINE_METHODS`, whose entry
resolves a sweep's settings into the plain params dict a unit carries; here that dict becomes
the method's own dataclass and its `Method`. tests/train/test_registries.py keeps the two
registries in step (a name in one and not the other fails there, not on a worker).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ltsweep.train.baselines.dividemix import DivideMix, DivideMixParams
from ltsweep.train.baselines.elr import ELR, ELRParams
from ltsweep.train.baselines.elr_plus import ELRPlus, ELRPlusParams
from ltsweep.train.baselines.loop import Method
from ltsweep.train.baselines.supervised import LossParams, Supervised


@dataclass(frozen=True)
class BaselineTrainer:
    params: type  # a frozen dataclass built from the unit's params dict
    method: Callable[[Any], Method]  # builds the method from its params


TRAINERS: dict[str, BaselineTrainer] = {
    **{name: BaselineTrainer(LossParams, Supervised) for name in ("ce", "la", "sl", "la+sl")},
    "elr": BaselineTrainer(ELRParams, ELR),
    "elr+": BaselineTrainer(ELRPlusParams, ELRPlus),
    "dividemix": BaselineTrainer(DivideMixParams, DivideMix),
}


def build_baseline(name: str, params: dict[str, Any]) -> Method:
    """The method `name` with `params` (a unit's `settings["params"]`)."""
    if name not in TRAINERS:
        raise ValueError(f"unknown baseline {name!r} (expected one of {', '.join(TRAINERS)})")
    trainer = TRAINERS[name]
    return trainer.method(trainer.params(**params))
