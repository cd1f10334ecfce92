"""What of a plan is already stored: the run folder and the cache are the truth.

Nothing here reads Ray's experiment state: a resumed sweep rebuilds its plan from the sweep
file and skips whatever this module finds stored. Imports no torch and no ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ltsweep.planning.plan import Plan
from ltsweep.store import cache, shared_rows
from ltsweep.store.atomic import move_aside
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
    #: damaged stored files moved aside by `assess(..., repair=True)`, one line each
    repaired: list[str] = field(default_factory=list)
    #: unit keys not in this run's results but computed by a run sharing the cache
    from_cache: set[str] = field(default_factory=set)

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
                "cached": len(keys & self.from_cache),
                "failed": len(keys & self.failed),
                "todo": len(todo),
            }
        return out


def assess(
    plan: Plan, run_dir: Path, cache_dir: Path, verify: bool = True, repair: bool = False
) -> Assessment:
    """Split `plan` into stored and to-do units; with `verify`, check the cache entries to be read.

    A damaged feature file (or finished-pre-train record) raises `CacheError` naming it, or,
    with `repair` (a run, holding the run folder's lock), is moved to `<cache>/.quarantine/`
    and its pre-train is run again (it recomputes only what is missing). Unreadable results
    files are then moved aside by the caller (`quarantine_results`) before this is called.
    """
    results = Path(run_dir) / "results"
    done = stored_keys(results, "ok")
    failed = stored_keys(results, "failed") - done
    a = Assessment(plan, done, failed)
    missing = {u.key for u in (*plan.finetunes, *plan.baselines)} - done
    a.from_cache = missing & shared_rows.cached_keys(cache_dir) if missing else set()
    stored = done | a.from_cache
    a.finetunes_todo = [u for u in plan.finetunes if u.key not in stored]
    a.baselines_todo = [u for u in plan.baselines if u.key not in stored]
    needed = {(u.pretrain_key, u.pretrain_epochs) for u in a.finetunes_todo}
    for p in plan.pretrains:
        redo = False
        if verify and any(k == p.key for k, _ in needed):
            problem = cache.check_pretrain_meta(cache_dir, p.key)
            if problem is not None:
                meta = cache.pretrain_dir(cache_dir, p.key) / "meta.json"
                if not repair:
                    raise cache.CacheError(f"{meta}: unreadable pre-train record ({problem})")
                moved = move_aside(meta, cache_dir)
                redo = True
                a.repaired.append(
                    f"{meta}: unreadable pre-train record ({problem}); moved to {moved}"
                )
        ready = all(cache.features_ready(cache_dir, p.key, e) for e in p.feature_epochs)
        if ready and verify:
            for e in p.feature_epochs:
                if (p.key, e) not in needed:
                    continue
                try:
                    cache.verify_features(cache_dir, p.key, e)
                except cache.CacheError as err:
                    if not repair:
                        raise
                    moved = cache.quarantine_features(cache_dir, p.key, e)
                    where = moved[-1].parent if moved else cache_dir
                    a.repaired.append(f"{str(err).split(cache.AGAIN)[0]}; moved to {where}")
                    ready = False
        if not ready or redo:
            a.pretrains_todo.append(p)
    return a
