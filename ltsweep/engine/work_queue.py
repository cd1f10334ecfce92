"""The sweep's work as Tune sees it: what is ready, in which order, and what waits.

`work_items` turns what is still to do into Tune configs: pre-trains first (they unlock the
most), then fine-tune groups whose features are stored (cheap), then baselines (long); a
fine-tune group whose pre-train is still to run waits for it. Each config carries its price
in FLOPs (`FLOPS`), for the progress view. `DependencySearcher` hands the
ready configs to Tune one by one and, when a pre-train trial completes, releases its
fine-tunes ahead of the queued baselines. A unit that raised reports `FAILED` (its worker
recorded it) instead of erroring in Tune, which keeps Tune's own retries for lost workers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from ray.tune.search import Searcher

from ltsweep.engine.progress import FLOPS
from ltsweep.store.atomic import write_json
from ltsweep.sweep import estimate
from ltsweep.sweep.schema import Sweep
from ltsweep.units import baseline, finetune, pretrain


def work_items(assessment, sweep: Sweep) -> tuple[list[dict], dict[str, list[dict]]]:
    """Tune configs: what is ready now, and what waits for a pre-train (by pre-train key).

    Ready work is handed out in this order: pre-trains (they unlock the most), then fine-tune
    groups whose features are stored (cheap; a resumed or second sweep has many), then the
    baselines (long); fine-tunes released later by a finished pre-train jump ahead of the
    baselines still queued (`DependencySearcher.on_trial_complete`).
    """
    pending = {p.key for p in assessment.pretrains_todo}
    ready = [
        priced(pretrain.config(p), estimate.pretrain_flops(sweep, p))
        for p in assessment.pretrains_todo
    ]
    waiting: dict[str, list[dict]] = {}
    for group in finetune.finetune_groups(sweep, assessment.finetunes_todo):
        config = priced(
            finetune.config(group), sum(estimate.finetune_flops(sweep, u) for u in group)
        )
        if group[0].depends_on in pending:
            waiting.setdefault(group[0].depends_on, []).append(config)
        else:
            ready.append(config)
    ready += [
        priced(baseline.config(b), estimate.baseline_flops(sweep, b))
        for b in assessment.baselines_todo
    ]
    return ready, waiting


def priced(config: dict, flops: float) -> dict:
    """`config` with its price in FLOPs."""
    return config | {FLOPS: float(flops)}


FAILED = "failed"  # the key of a trial's report whose unit raised (its value: the error)


def failed_result(result: dict | None) -> bool:
    return bool((result or {}).get(FAILED))


class DependencySearcher(Searcher):
    """Hands out ready work; a finished pre-train unlocks its fine-tunes.

    Live driver-side objects (the stop event, the failure callback) are dropped when Tune
    pickles the searcher into its experiment state, which ltsweep never reads back.
    """

    def __init__(
        self,
        ready: list[dict],
        waiting: dict[str, list[dict]],
        stop_event: threading.Event,
        on_pretrain_failed: Callable[[dict, list[dict]], None],
    ) -> None:
        super().__init__()
        self.ready, self.waiting, self.running = list(ready), dict(waiting), {}
        self.stop_event, self.on_pretrain_failed = stop_event, on_pretrain_failed

    def suggest(self, trial_id: str):
        if self.stop_event.is_set():
            return Searcher.FINISHED
        if self.ready:
            self.running[trial_id] = self.ready.pop(0)
            return self.running[trial_id]
        return None if self.waiting else Searcher.FINISHED

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        config = self.running.pop(trial_id, None)
        if config is None or config["kind"] != "pretrain":
            return
        released = self.waiting.pop(config["unit"]["key"], [])
        if error or failed_result(result):
            self.on_pretrain_failed(config, released)
        else:
            self.ready[0:0] = released  # fine-tunes are cheap: run them before queued long units

    def __getstate__(self) -> dict:
        return {
            "ready": self.ready,
            "waiting": self.waiting,
            "running": self.running,
            "stop_event": None,
            "on_pretrain_failed": None,
        }

    def save(self, checkpoint_path: str) -> None:
        write_json(checkpoint_path, {"ready": self.ready, "waiting": self.waiting})

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.ready, self.waiting = state["ready"], state["waiting"]
