"""Unit counts against the grid, content keys, and the protocol's head switch."""

import pytest

from ltsweep.planning.plan import make_plan
from ltsweep.sweep.schema import parse_sweep
from ltsweep.units.finetune import group_finetunes

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
    # cut in seed order: a Tune trial holds runs of one seed (they share batches), so each seed
    # is split over as few Tune trials as the size allows
    small = group_finetunes(plan.finetunes, max_size=7)
    assert all([u.seed for u in g] == sorted(u.seed for u in g) for g in small)
    for g in groups:
        seeds = sorted({u.seed for u in g})
        assert len(seeds) > 1
        holding = {
            s: sum(
                any(u.seed == s for u in t) for t in small if t[0].group_key() == g[0].group_key()
            )
            for s in seeds
        }
        per_seed = sum(u.seed == seeds[0] for u in g)
        assert all(n <= -(-per_seed // 7) + 1 for n in holding.values())
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


def test_the_driver_cuts_groups_to_the_memory_budget():
    from ltsweep.sweep.estimate import finetune_bytes
    from ltsweep.units.finetune import finetune_groups

    def sweep(**execution):
        grid = {**GRID, "ssl": ["simsiam"], "gamma": [100], "data_seeds": [0]}
        return parse_sweep({"name": "t", "grid": grid, "execution": execution})

    roomy = sweep()
    plan = make_plan(roomy)
    assert len(finetune_groups(roomy, plan.finetunes)) == 2  # one per head mode
    full = next(u for u in plan.finetunes if u.head == "full")
    per_trial = finetune_bytes(roomy, full)
    assert 16 * 2**20 < per_trial < 64 * 2**20  # 2048-wide 2-FC head on 512-d features
    # room for exactly 5 full-head trials; last-layer trials are ~100x smaller and stay whole
    tight = sweep(finetune_memory_gb=5.5 * per_trial / 2**30)
    groups = finetune_groups(tight, plan.finetunes)
    fulls = [g for g in groups if g[0].head == "full"]
    n_full = sum(u.head == "full" for u in plan.finetunes)
    assert [len(g) for g in fulls] == [5] * (n_full // 5) + ([n_full % 5] if n_full % 5 else [])
    assert len([g for g in groups if g[0].head == "last"]) == 1
    assert sum(len(g) for g in groups) == len(plan.finetunes)
    # the trial cap and the switch still apply
    assert {len(g) for g in finetune_groups(sweep(max_group_size=3), plan.finetunes)} <= {1, 2, 3}
    one_each = finetune_groups(sweep(group_finetunes=False), plan.finetunes)
    assert len(one_each) == len(plan.finetunes)
