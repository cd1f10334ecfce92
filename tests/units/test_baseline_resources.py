"""`resources.baseline`: what one baseline run asks Ray for, apart from the pre-trains.

Without the block a baseline asks for what a pre-train asks for (as before it existed); with
a fraction of a GPU, two or more share one: in the unit's resources, the checks of a local
Ray, the progress view's trials at once, and the estimate's line. Keys do not move.
"""

from __future__ import annotations

import pytest
import yaml

from ltsweep.engine import sweep_progress
from ltsweep.engine.local_checks import asked_kinds, check_gpu
from ltsweep.planning.plan import KINDS, make_plan
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.estimate import estimate
from ltsweep.sweep.schema import Resources, parse_sweep
from ltsweep.units import baseline
from ltsweep.units.baseline import plan_baselines
from tests.helpers import REPO


def _sweep(resources: dict | None = None, methods=("ce",)) -> object:
    data = {
        "name": "shared-gpu",
        "data": {"dataset": "digits", "image_size": 16},
        "backbone": {"width": 8},
        "grid": {"gamma": [10], "noise": [0.2], "seeds": [0]},
        "baselines": {"methods": list(methods), "epochs": 2},
        "resources": {"pretrain": {"cpu": 8, "gpu": 1}, **(resources or {})},
    }
    return parse_sweep(data)


def test_without_the_block_a_baseline_asks_for_what_a_pretrain_asks_for():
    sweep = _sweep()
    assert sweep.resources.baseline == Resources(cpu=8, gpu=1)
    assert KINDS["baseline"].resources(sweep) == sweep.resources.pretrain


def test_a_fraction_of_a_gpu_is_the_baseline_units_resources():
    sweep = _sweep({"baseline": {"cpu": 4, "gpu": 0.5}})
    assert KINDS["baseline"].resources(sweep) == Resources(cpu=4, gpu=0.5)
    assert KINDS["pretrain"].resources(sweep) == Resources(cpu=8, gpu=1)  # unchanged
    # the frozen copy a run writes reads back the same
    again = parse_sweep(sweep.model_dump(mode="json"))
    assert again.resources.baseline == Resources(cpu=4, gpu=0.5)


def _work(sweep) -> list[dict]:
    """Every Tune config of `sweep`'s plan, as the driver builds them."""
    from types import SimpleNamespace

    from ltsweep.engine.work_queue import work_items

    plan = make_plan(sweep)
    todo = SimpleNamespace(
        pretrains_todo=plan.pretrains, finetunes_todo=plan.finetunes, baselines_todo=plan.baselines
    )
    ready, waiting = work_items(todo, sweep)
    return [*ready, *(c for cs in waiting.values() for c in cs)]


def test_resources_never_enter_the_keys():
    """A share of a GPU is still CUDA: every baseline (and every other) key stays."""
    alone = make_plan(_sweep())
    shared = make_plan(_sweep({"baseline": {"cpu": 4, "gpu": 0.5}}))
    assert [u.key for u in shared.baselines] == [u.key for u in alone.baselines]
    assert [u.key for u in shared.pretrains] == [u.key for u in alone.pretrains]
    assert [u.key for u in shared.finetunes] == [u.key for u in alone.finetunes]


def test_every_planned_unit_carries_its_kinds_resources_and_its_sweep():
    """What the driver, the progress view and a failed row read: on the unit, from the plan."""
    sweep = _sweep({"baseline": {"cpu": 4, "gpu": 0.5}})
    plan = make_plan(sweep)
    for kind, units in (
        ("pretrain", plan.pretrains),
        ("finetune", plan.finetunes),
        ("baseline", plan.baselines),
    ):
        r = KINDS[kind].resources(sweep)
        assert units and all((u.cpu, u.gpu) == (r.cpu, r.gpu) for u in units)
    assert {u.sweep_name for u in (*plan.finetunes, *plan.baselines)} == {"shared-gpu"}


@pytest.mark.parametrize("name", ["cifar10.yaml", "cifar100.yaml"])
def test_the_gpu_sweep_files_put_two_baselines_on_a_gpu_and_keep_their_keys(name):
    data = yaml.safe_load((REPO / "sweeps" / name).read_text())
    sweep = parse_sweep(data)
    assert baseline.resources(sweep) == Resources(cpu=4, gpu=0.5)
    del data["resources"]["baseline"]
    before = parse_sweep(data)
    assert [u.key for u in plan_baselines(sweep)] == [u.key for u in plan_baselines(before)]


def test_more_than_one_gpu_must_be_whole():
    with pytest.raises(SpecError, match=r"resources\.baseline: gpu: 1\.5 .* not a whole number"):
        _sweep({"baseline": {"cpu": 1, "gpu": 1.5}})
    assert baseline.resources(_sweep({"baseline": {"cpu": 1, "gpu": 2}})).gpu == 2


def test_progress_counts_two_baselines_per_gpu():
    sweep = _sweep({"baseline": {"cpu": 4, "gpu": 0.5}})
    progress = sweep_progress.for_run(
        {"pretrain": 1, "finetune": 1, "baseline": 1}, _work(sweep), {"CPU": 64, "GPU": 2}
    )
    assert progress.slots["baseline"] == 4  # 2 GPUs / 0.5
    assert progress.slots["pretrain"] == 2


def test_the_estimate_says_how_many_baselines_share_a_gpu():
    shared = _sweep({"baseline": {"cpu": 4, "gpu": 0.5}})
    alone = _sweep()
    e_shared = estimate(shared, [], [], plan_baselines(shared))
    e_alone = estimate(alone, [], [], plan_baselines(alone))
    assert e_shared.baseline_gpu == 0.5 and e_shared.baselines_per_gpu == 2
    assert ", 2 per GPU (resources.baseline.gpu)" in e_shared.line()
    assert "per GPU" not in e_alone.line()
    # the work is the same: a share of a GPU runs at that share of its rate
    assert e_shared.total_hours == pytest.approx(e_alone.total_hours)


def test_a_local_run_checks_the_baselines_gpu_and_cpus(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu_only = {"pretrain": {"cpu": 1, "gpu": 0}, "finetune": {"cpu": 1, "gpu": 0}}
    sweep = _sweep({**cpu_only, "baseline": {"cpu": 1, "gpu": 0.5}})
    assert asked_kinds(sweep) == ["pretrain", "finetune", "baseline"]
    with pytest.raises(SpecError, match=r"resources\.baseline\.gpu: a GPU is asked for"):
        check_gpu(sweep, "s.yaml")
    # a sweep without baselines does not ask for their (default) resources
    none = parse_sweep({"name": "n", "resources": cpu_only, "execution": {"device": "cpu"}})
    assert none.resources.baseline.gpu == 0 and asked_kinds(none) == ["pretrain", "finetune"]


def test_the_ray_driver_refuses_a_baseline_share_the_cluster_lacks():
    from ltsweep.engine.ray_driver import _check_resources

    sweep = _sweep({"baseline": {"cpu": 16, "gpu": 0.5}})
    with pytest.raises(SpecError, match=r"resources\.baseline\.cpu: 16 CPUs asked"):
        _check_resources(_work(sweep), {"CPU": 8, "GPU": 1})
    _check_resources(_work(_sweep({"baseline": {"cpu": 4, "gpu": 0.5}})), {"CPU": 8, "GPU": 1})
    # a kind with nothing left to run asks for nothing: stored pre-trains need no GPU
    fine = [c for c in _work(_sweep()) if c["kind"] == "finetune"]
    with pytest.raises(SpecError, match=r"resources\.finetune\.gpu"):
        _check_resources(fine, {"CPU": 8})
    _check_resources(fine, {"CPU": 8, "GPU": 1})


def test_each_tune_trial_asks_ray_for_its_kinds_resources():
    from ltsweep.engine.ray_driver import trial_resources

    asks = {
        c["kind"]: trial_resources(c).required_resources
        for c in _work(_sweep({"baseline": {"cpu": 4, "gpu": 0.5}}))
    }
    assert asks["baseline"] == {"CPU": 4, "GPU": 0.5}
    assert asks["pretrain"] == {"CPU": 8, "GPU": 1}
    assert asks["finetune"] == {"CPU": 1, "GPU": 0.25}
