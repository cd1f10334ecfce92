"""A sweep file expanded into units of work, each named by a content key.

The plan composes the three unit kinds of `ltsweep.units`: the pre-trains, the fine-tune
trials on each pre-train's features, and the single-stage baselines over the same cells.
`KINDS` is how the driver reaches a kind by name: each unit module plans its units, builds
the Tune config of a unit (or a fine-tune group), names the resources it asks for, and runs
such a config in a worker. Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

from ltsweep.sweep.schema import Sweep
from ltsweep.units import baseline, finetune, pretrain
from ltsweep.units.baseline import BaselineUnit
from ltsweep.units.finetune import FinetuneUnit
from ltsweep.units.pretrain import PretrainUnit

#: the unit kinds by name (a Tune config's "kind")
KINDS: dict[str, ModuleType] = {m.KIND: m for m in (pretrain, finetune, baseline)}


@dataclass
class Plan:
    sweep: Sweep
    pretrains: list[PretrainUnit]
    finetunes: list[FinetuneUnit]
    baselines: list[BaselineUnit] = field(default_factory=list)

    def pretrain(self, key: str) -> PretrainUnit:
        return self._by_key[key]

    def __post_init__(self) -> None:
        self._by_key = {p.key: p for p in self.pretrains}


def make_plan(sweep: Sweep) -> Plan:
    """Every unit of `sweep`, in a stable order (the driver schedules in this order)."""
    pretrains = pretrain.plan_pretrains(sweep)
    return Plan(
        sweep,
        pretrains,
        finetune.plan_finetunes(sweep, pretrains),
        baseline.plan_baselines(sweep),
    )
