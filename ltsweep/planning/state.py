"""What of a plan is already stored: the run folder and the cache are the truth.

Nothing here reads Ray's experiment state: a resumed sweep rebuilds its plan from the sweep
file and skips whatever this module finds stored. Imports no torch and no ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ltsweep.planning.plan import Plan
from ltsweep.store import cache
from ltsweep.store.results import stored_keys
from ltsweep.units.baseline import BaselineUnit
from ltsweep.units.finetune import FinetuneUnit
from ltsweep.units.pretrain import PretrainUnit


@dataclass
class Assessment:
    plan: Plan
    done: set[str]  # unit keys with an ok result row
    failed: set[str]  # unit keys whose last attempt failed (and have no ok row)
    pretrains_todo: list[PretrainUnit] = field(default_factory=list)
    finetunes_todo: list[FinetuneUnit] = field(default_factory=list)
    baselines_todo: list[BaselineUnit] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per stage: total, done, failed (last attempt), to do."""
        p = self.plan
        pre_done = len(p.pretrains) - len(self.pretrains_todo)
        out = {
            "pretrain": {
                "total": len(p.pretrains),
                "done": pre_done,
                "failed": 0,
                "todo": len(self.pretrains_todo),
            }
        }
        for stage, units, todo in (
            ("finetune", p.finetunes, self.finetunes_todo),
            ("baseline", p.baselines, self.baselines_todo),
        ):
            keys = {u.key for u in units}
            out[stage] = {
                "total": len(units),
                "done": len(keys & self.done),
                "failed": len(keys & self.failed),
                "todo": len(todo),
            }
        return out


def assess(plan: Plan, run_dir: Path, cache_dir: Path, verify: bool = True) -> Assessment:
    """Split `plan` into stored and to-do units; with `verify`, check the features to be read.

    A corrupt feature file raises `CacheError` (ltsweep.store.cache) naming it, before anything
    is scheduled.
    """
    results = Path(run_dir) / "results"
    done = stored_keys(results, "ok")
    failed = stored_keys(results, "failed") - done
    a = Assessment(plan, done, failed)
    a.finetunes_todo = [u for u in plan.finetunes if u.key not in done]
    a.baselines_todo = [u for u in plan.baselines if u.key not in done]
    needed = {(u.pretrain_key, u.pretrain_epochs) for u in a.finetunes_todo}
    for p in plan.pretrains:
        ready = all(cache.features_ready(cache_dir, p.key, e) for e in p.feature_epochs)
        if not ready:
            a.pretrains_todo.append(p)
        elif verify:
            for e in p.feature_epochs:
                if (p.key, e) in needed:
                    cache.verify_features(cache_dir, p.key, e)
    return a
