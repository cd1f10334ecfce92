"""The order the driver hands out ready work: pre-trains, stored-feature fine-tunes, baselines."""

from __future__ import annotations

from types import SimpleNamespace

import yaml

from ltsweep.engine.work_queue import work_items as _work_items
from ltsweep.planning.plan import make_plan
from ltsweep.sweep.schema import parse_sweep
from tests.helpers import TINY_SWEEP


def _plan():
    spec = yaml.safe_load(TINY_SWEEP.read_text())
    spec["baselines"] = {"methods": ["ce"], "epochs": 1}
    sweep = parse_sweep(spec, "tiny+ce")
    return sweep, make_plan(sweep)


def test_stored_features_fine_tunes_go_before_baselines_and_the_rest_wait() -> None:
    sweep, plan = _plan()
    stored, todo = plan.pretrains  # one pre-train is stored, the other still to run
    assessment = SimpleNamespace(
        pretrains_todo=[todo], finetunes_todo=plan.finetunes, baselines_todo=plan.baselines
    )
    ready, waiting = _work_items(assessment, sweep)
    kinds = [c["kind"] for c in ready]
    n_ft = kinds.count("finetune")
    assert kinds == ["pretrain"] + ["finetune"] * n_ft + ["baseline"] * len(plan.baselines)
    assert n_ft >= 1
    ready_ft = {u["key"] for c in ready if c["kind"] == "finetune" for u in c["units"]}
    assert ready_ft == {u.key for u in plan.finetunes if u.pretrain_key == stored.key}
    assert set(waiting) == {todo.key}
    waiting_ft = {u["key"] for c in waiting[todo.key] for u in c["units"]}
    assert waiting_ft == {u.key for u in plan.finetunes if u.pretrain_key == todo.key}
