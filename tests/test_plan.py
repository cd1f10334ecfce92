"""Unit counts against the grid, content keys, and the protocol's head switch."""

import pytest

from ltsweep.plan import group_finetunes, make_plan
from ltsweep.spec import parse_sweep

GRID = {
    "ssl": ["simsiam", "byol", "barlow", "simclr"],
    "gamma": [1, 50, 100],
    "noise": [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    "losses": ["ce", "ce+sl", "la", "la+sl"],
    "seeds": [0, 1],
    "data_seeds": [0, 1],
}


def _plan(**grid):
    return make_plan(parse_sweep({"name": "t", "grid": {**GRID, **grid}}))


def test_counts_follow_the_grid():
    plan = _plan()
    assert (
        len(plan.pretrains) == 4 * 3 * 2
    )  # method x gamma x data seed: noise is not in a pre-train
    assert len(plan.finetunes) == len(plan.pretrains) * 10 * 4 * 2
    assert len({u.key for u in plan.finetunes}) == len(plan.finetunes)


@pytest.mark.parametrize("method,threshold", [("simsiam", 0.6), ("byol", 0.4), ("barlow", 0.2)])
def test_head_switches_to_last_fc_above_the_methods_noise(method, threshold):
    plan = _plan(ssl=[method])
    for u in plan.finetunes:
        if u.noise > threshold:
            assert (u.head, u.lr) == ("last", 0.01)
        else:
            assert (u.head, u.lr) == ("full", 3e-3)


def test_simclr_is_a_linear_probe():
    plan = _plan(ssl=["simclr"])
    assert {(u.head, u.lr, u.weight_decay, u.epochs) for u in plan.finetunes} == {
        ("linear", 1e-3, 1e-6, 25)
    }


def test_keys_are_stable_and_change_with_settings():
    a, b = _plan(), _plan()
    assert [u.key for u in a.finetunes] == [u.key for u in b.finetunes]
    changed = make_plan(
        parse_sweep({"name": "t", "grid": GRID, "ssl": {"simsiam": {"epochs": 10}}})
    )
    simsiam = lambda p: {u.key for u in p.pretrains if u.method == "simsiam"}  # noqa: E731
    others = lambda p: {u.key for u in p.pretrains if u.method != "simsiam"}  # noqa: E731
    assert simsiam(changed).isdisjoint(simsiam(a)) and others(changed) == others(a)
    renamed = make_plan(parse_sweep({"name": "other-name", "grid": GRID}))
    assert {u.key for u in renamed.finetunes} == {
        u.key for u in a.finetunes
    }  # the name is not content


def test_grouping_stacks_trials_of_one_pretrain_and_head():
    plan = _plan(ssl=["simsiam"], gamma=[1], data_seeds=[0])
    groups = group_finetunes(plan.finetunes, max_size=1000)
    assert len(groups) == 2  # full and last heads
    assert sum(len(g) for g in groups) == len(plan.finetunes)
    assert all(len({u.group_key() for u in g}) == 1 for g in groups)
    assert len(group_finetunes(plan.finetunes, max_size=7)) == sum(-(-len(g) // 7) for g in groups)
    assert all(len(g) == 1 for g in group_finetunes(plan.finetunes, 1000, together=False))


def test_a_partial_finetune_override_keeps_the_methods_own_protocol():
    sweep = parse_sweep(
        {
            "name": "t",
            "grid": {"ssl": ["simclr", "byol"]},
            "ssl": {"simclr": {"finetune": {"epochs": 5}}, "byol": {"finetune": {"lr": 1e-3}}},
        }
    )
    simclr, byol = sweep.ssl_settings("simclr").finetune, sweep.ssl_settings("byol").finetune
    assert (simclr.head, simclr.lr, simclr.weight_decay, simclr.epochs) == ("linear", 1e-3, 1e-6, 5)
    assert (byol.head, byol.lr, byol.last_layer_above) == ("mlp", 1e-3, 0.4)
