"""Single-stage baselines: settings, hand-computed loss pieces, training, exact resume, same labels."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from ltsweep.data import long_tail_indices, symmetric_noise
from ltsweep.losses import superloss_sigma
from ltsweep.sweep.baseline_settings import BaselineSettings, DivideMixSettings, ELRSettings
from ltsweep.sweep.schema import parse_sweep
from ltsweep.train.baselines.common import Backbone, Budget, TrainSet, crop_flip, epoch_lr
from ltsweep.train.baselines.dividemix import (
    DivideMixParams,
    clean_probability,
    co_guess,
    division_stats,
    linear_rampup,
    mix_lambda,
    mixmatch,
    normalise_losses,
    prior_penalty,
    refine_labels,
    semi_loss,
    sharpen,
    train_dividemix,
)
from ltsweep.train.baselines.elr import ELRParams, elr_loss, train_elr, update_targets
from ltsweep.train.baselines.supervised import LossParams, supervised_loss, train_supervised
from ltsweep.units import baseline as unit_mod
from ltsweep.units.base import RunContext
from ltsweep.units.baseline import plan_baselines, run_baseline

BACKBONE = Backbone("resnet18", 8, "cifar")
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread, as in a worker


def tiny_set(data, n: int, noise: float = 0.2, seed: int = 0) -> TrainSet:
    """`n` balanced 16x16 digits with symmetric noise."""
    index = long_tail_indices(data.train.labels, 10, 1.0, seed)
    index = np.sort(np.random.default_rng(seed).choice(index, n, replace=False))
    clean = data.train.labels[index]
    noisy = symmetric_noise(clean, 10, noise, seed)
    return TrainSet(data.train, index, noisy.labels, clean, 10, data.mean, data.std)


def budget(epochs: int, lr: float = 0.05, batch: int = 64) -> Budget:
    return Budget(epochs, batch, "sgd", 0.9, lr, 5e-4, "cosine", 2, 0.5)


def accuracy(outcome, data) -> float:
    return float((outcome.test_logits.argmax(1).numpy() == data.test.labels).mean())


# --- settings and plan ------------------------------------------------------------------


def test_settings_defaults_and_resolution():
    s = BaselineSettings()
    assert s.methods == [] and s.epochs == 200 and s.batch_size == 128
    assert (s.lr, s.weight_decay, s.momentum, s.schedule) == (0.02, 5e-4, 0.9, "cosine")
    assert s.elr.resolved("cifar10").model_dump() == {"beta": 0.7, "lam": 3.0}
    assert s.elr.resolved("cifar100").model_dump() == {"beta": 0.9, "lam": 7.0}
    assert ELRSettings(beta=0.5).resolved("cifar100").model_dump() == {"beta": 0.5, "lam": 7.0}
    dm = s.dividemix
    assert dm.resolved_warmup("cifar10") == 10 and dm.resolved_warmup("cifar100") == 30
    # the nearest reference level at or above the rate; above 90 %: the 90 % entry
    expect10 = {0.0: 0, 0.2: 0, 0.3: 25, 0.5: 25, 0.6: 25, 0.8: 25, 0.85: 50, 0.9: 50, 0.95: 50}
    for noise, lu in expect10.items():
        assert dm.resolved_lambda_u("cifar10", noise) == lu, noise
    expect100 = {0.1: 25, 0.2: 25, 0.4: 150, 0.9: 150}  # Appendix B: 25 at 20 %
    for noise, lu in expect100.items():
        assert dm.resolved_lambda_u("cifar100", noise) == lu, noise
    assert DivideMixSettings(lambda_u=3).resolved_lambda_u("cifar10", 0.9) == 3
    assert dm.averages_losses(0.9) and not dm.averages_losses(0.8)
    with pytest.raises(ValueError, match="unknown baseline"):
        BaselineSettings(methods=["mixup"])
    with pytest.raises(ValueError, match="Extra inputs"):
        BaselineSettings(epoch=3)
    # YAML parses `0.5: 25` with float keys; strings coerce too
    table = DivideMixSettings(lambda_u_table={"digits": {"0.5": 7}}).lambda_u_table
    assert table == {"digits": {0.5: 7.0}}


def _sweep(**baselines):
    return parse_sweep(
        {
            "name": "bl",
            "data": {"dataset": "digits", "image_size": 16},
            "backbone": {"width": 8},
            "grid": {"gamma": [1, 10], "noise": [0.2, 0.9], "seeds": [0, 1], "data_seeds": [0]},
            "baselines": baselines,
        }
    )


def test_plan_baselines_keys():
    sweep = _sweep(
        methods=["ce", "la+sl", "elr", "dividemix"], epochs=5, dividemix={"schedule": "shared"}
    )
    units = plan_baselines(sweep)
    assert len(units) == 4 * 2 * 2 * 2 and len({u.key for u in units}) == len(units)
    assert {u.stage for u in units} == {"baseline"} and {u.epochs for u in units} == {5}
    dm = [u for u in units if u.method == "dividemix"]
    assert {u.noise: u.settings["params"]["lambda_u"] for u in dm} == {0.2: 0.0, 0.9: 50.0}
    assert {u.settings["params"]["mix_batch_size"] for u in dm} == {64}
    sl = next(u for u in units if u.method == "la+sl").settings["params"]
    assert sl == {"loss": "la+sl", "la_tau": 1.0, "sl_lambda": 4.0, "sl_threshold": math.log(10)}

    def keys(**kw):
        return {(u.method, u.gamma, u.noise, u.seed): u.key for u in plan_baselines(_sweep(**kw))}

    base = keys(methods=["ce", "elr"], epochs=5)
    # a method's own setting changes only that method's keys; checkpointing changes none
    other = keys(methods=["ce", "elr"], epochs=5, elr={"beta": 0.5}, checkpoint_every=1)
    for k, v in base.items():
        assert (other[k] == v) == (k[0] == "ce")
    assert keys(methods=["ce", "elr"], epochs=6).keys() == base.keys()
    assert not set(keys(methods=["ce", "elr"], epochs=6).values()) & set(base.values())


def test_plan_imports_no_torch():
    code = (
        "import sys; from ltsweep.sweep.schema import parse_sweep; from ltsweep.units.baseline import "
        "plan_baselines; s = parse_sweep({'name': 'x', 'baselines': {'methods': ['dividemix']}}); "
        "assert plan_baselines(s); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- hand-computed pieces ---------------------------------------------------------------


def test_supervised_loss_is_the_named_loss():
    """CE, LA (tau * log prior added to the logits), SL and LA+SL, each written out by hand."""
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 10, generator=g), torch.randint(0, 10, (6,), generator=g)
    prior = torch.rand(10, generator=g) + 0.1
    log_prior = (prior / prior.sum()).log()
    tau, lam, thr = 1.5, 4.0, math.log(10)

    def ce(z: torch.Tensor) -> torch.Tensor:
        return -(z.log_softmax(-1).gather(1, labels[:, None]).squeeze(1))

    def sl(loss: torch.Tensor) -> torch.Tensor:
        sigma = superloss_sigma(loss, thr, lam)
        return (loss - thr) * sigma + lam * sigma.log() ** 2

    expected = {
        "ce": ce(logits),
        "la": ce(logits + tau * log_prior),
        "sl": sl(ce(logits)),
        "la+sl": sl(ce(logits + tau * log_prior)),
    }
    for loss, want in expected.items():
        p = LossParams(loss, la_tau=tau, sl_lambda=lam, sl_threshold=thr)
        got = supervised_loss(logits, labels, p, log_prior)
        assert torch.allclose(got, want.mean()), loss


def test_elr_target_update_and_regulariser():
    logits = torch.tensor(
        [[0.0, 0.0], [math.log(3.0), 0.0]], requires_grad=True
    )  # p = .5/.5, .75/.25
    target = torch.tensor([[0.0, 0.0], [9.0, 9.0], [0.2, 0.8]])
    pos = torch.tensor([0, 2])
    loss = elr_loss(logits, torch.tensor([0, 0]), target, pos, ELRParams(beta=0.7, lam=3.0))
    t0, t2 = [0.15, 0.15], [0.7 * 0.2 + 0.3 * 0.75, 0.7 * 0.8 + 0.3 * 0.25]  # [.365, .635]
    assert torch.allclose(target, torch.tensor([t0, [9.0, 9.0], t2]))  # row 1 untouched
    reg = 0.5 * (math.log(1 - 0.15) + math.log(1 - (0.365 * 0.75 + 0.635 * 0.25)))
    ce = 0.5 * (-math.log(0.5) - math.log(0.75))
    assert loss.item() == pytest.approx(ce + 3.0 * reg, abs=1e-6)
    loss.backward()  # the gradient flows through p only, never into the buffer
    assert logits.grad is not None and not target.requires_grad
    # clamped to [1e-4, 1 - 1e-4] then renormalised, as the reference
    buf = torch.zeros(1, 2)
    p = torch.clamp(torch.softmax(torch.tensor([[30.0, -30.0]]), 1), 1e-4, 1 - 1e-4)
    update_targets(buf, torch.tensor([0]), p, beta=0.0)
    assert torch.allclose(buf, torch.tensor([[1 - 1e-4, 1e-4]])) and buf.sum() == pytest.approx(1)


def test_gmm_division_recovers_clean_set():
    rng = np.random.default_rng(0)
    clean = rng.random(200) < 0.7
    losses = np.where(clean, rng.normal(0.3, 0.1, 200), rng.normal(3.0, 0.4, 200)).clip(0)
    norm = normalise_losses(torch.as_tensor(losses)).numpy()
    assert norm.min() == 0 and norm.max() == 1
    prob = clean_probability(norm, DivideMixParams(warmup_epochs=0), random_state=0)
    np.testing.assert_array_equal(prob > 0.5, clean)
    assert torch.equal(normalise_losses(torch.ones(4)), torch.zeros(4))
    pred = torch.as_tensor(np.stack([prob > 0.5, np.ones(200, bool)]))
    frac, prec = division_stats(pred, clean)
    assert frac == pytest.approx((clean.mean() + 1) / 2) and prec == pytest.approx(
        (1 + clean.mean()) / 2
    )


def test_refinement_sharpening_and_co_guessing():
    assert torch.allclose(
        sharpen(torch.tensor([[0.6, 0.4]]), 0.5), torch.tensor([[9 / 13, 4 / 13]])
    )
    onehot, w = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5]])
    px = refine_labels(onehot, w, torch.tensor([[0.2, 0.8]]), torch.tensor([[0.4, 0.6]]), T=0.5)
    # 0.5 * [1, 0] + 0.5 * [0.3, 0.7] = [0.65, 0.35], squared and renormalised
    assert torch.allclose(px, torch.tensor([[0.4225 / 0.545, 0.1225 / 0.545]]))
    assert torch.allclose(refine_labels(onehot, torch.ones(1, 1), px, px, 0.5), onehot)
    probs = [torch.tensor([[a, 1 - a]]) for a in (0.9, 0.7, 0.5, 0.3)]  # mean [0.6, 0.4]
    assert torch.allclose(co_guess(probs, 0.5), torch.tensor([[9 / 13, 4 / 13]]))


def test_mixmatch_with_fixed_lambda():
    x = torch.tensor([[1.0], [3.0], [10.0]])
    y = torch.eye(3)
    mx, my = mixmatch(x, y, 0.75, torch.tensor([1, 0, 2]))
    assert torch.allclose(mx, torch.tensor([[1.5], [2.5], [10.0]]))
    assert torch.allclose(my, torch.tensor([[0.75, 0.25, 0], [0.25, 0.75, 0], [0, 0, 1.0]]))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    lams = [mix_lambda(4.0, g1) for _ in range(50)]
    assert lams == [mix_lambda(4.0, g2) for _ in range(50)]  # reproducible from the generator
    assert min(lams) >= 0.5 and max(lams) <= 1.0 and len(set(lams)) > 40


def test_rampup_semi_loss_and_prior_penalty():
    assert linear_rampup(10, 10, 25) == 0 and linear_rampup(5, 10, 25) == 0
    assert linear_rampup(18, 10, 25) == 12.5 and linear_rampup(30, 10, 25) == 25
    # epoch 10, batch 3 of num_iter 4: current = 10 + 3 / 4
    assert linear_rampup(10 + 3 / 4, 10, 25) == pytest.approx(25 * 0.75 / 16)
    logits = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])  # p = [.75, .25]
    assert prior_penalty(logits).item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    assert prior_penalty(torch.zeros(3, 4)).abs().item() < 1e-7
    lx, lu = semi_loss(logits, torch.tensor([[0.5, 0.5]] * 2), logits, torch.tensor([[1.0, 0]] * 2))
    assert lx.item() == pytest.approx(-0.5 * (math.log(0.75) + math.log(0.25)), abs=1e-6)
    assert lu.item() == pytest.approx((0.25**2 + 0.25**2) / 2, abs=1e-6)
    _, lu0 = semi_loss(logits, torch.tensor([[0.5, 0.5]] * 2), logits[:0], logits[:0])
    assert lu0.item() == 0


def test_crop_flip_and_schedule():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 6, 6, generator=g)
    assert torch.equal(crop_flip(x, 0, 0.0, g), x)
    assert torch.equal(crop_flip(x, 0, 1.0, g), x.flip(3))
    out = crop_flip(x, 2, 0.5, g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        windows = [padded[i, :, a : a + 6, b : b + 6] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)
    b = budget(10, lr=0.1)
    assert epoch_lr(b, 0) == 0.1 and epoch_lr(b, 5) == pytest.approx(0.05)


# --- training ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["ce", "la+sl", "elr", "dividemix"])
def test_method_learns_noisy_digits(method, digits, tmp_path):
    train = tiny_set(digits, 600, noise=0.2)
    if method == "elr":
        out = train_elr(
            train, digits.test, BACKBONE, budget(4), ELRParams(0.7, 3.0), CPU, tmp_path, 0
        )
    elif method == "dividemix":
        params = DivideMixParams(warmup_epochs=2, lambda_u=25, mix_batch_size=32)
        out = train_dividemix(train, digits.test, BACKBONE, budget(4), params, CPU, tmp_path, 0)
        assert 0.5 < out.extra["clean_fraction"] <= 1 and out.extra["clean_precision"] > 0.85
    else:
        params = LossParams(method, 1.0, 4.0, math.log(10))
        out = train_supervised(train, digits.test, BACKBONE, budget(4), params, CPU, tmp_path, 0)
    assert out.epochs == 4 and all(math.isfinite(v) for v in out.loss_history)
    assert accuracy(out, digits) > 0.3  # chance is 0.1


class Stop(Exception):
    pass


def _stop_after(k: int):
    def hook(epoch: int) -> None:
        if epoch == k:
            raise Stop

    return hook


def test_elr_resumes_bit_identically(digits, tmp_path):
    train = tiny_set(digits, 256, noise=0.4, seed=1)
    run = lambda d, **kw: train_elr(  # noqa: E731
        train, digits.test, BACKBONE, budget(3), ELRParams(0.7, 3.0), CPU, d, 7, 1, **kw
    )
    whole: dict[str, torch.Tensor] = {}
    ref = run(tmp_path / "a", state=whole)
    with pytest.raises(Stop):
        run(tmp_path / "b", on_epoch=_stop_after(2))
    resumed: dict[str, torch.Tensor] = {}
    out = run(tmp_path / "b", state=resumed)
    assert whole["target"].abs().sum() > 0
    assert torch.equal(whole["target"], resumed["target"])
    assert torch.equal(ref.test_logits, out.test_logits) and ref.loss_history == out.loss_history
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def test_dividemix_resumes_bit_identically(digits, tmp_path):
    train = tiny_set(digits, 256, noise=0.4, seed=2)
    params = DivideMixParams(
        warmup_epochs=1,
        lambda_u=25,
        mix_batch_size=32,
        average_losses=True,
        average_losses_epochs=2,
    )
    run = lambda d, **kw: train_dividemix(  # noqa: E731
        train, digits.test, BACKBONE, budget(4), params, CPU, d, 3, 1, **kw
    )
    whole: dict[str, torch.Tensor] = {}
    ref = run(tmp_path / "a", state_out=whole)
    with pytest.raises(Stop):
        run(tmp_path / "b", on_epoch=_stop_after(2))  # after the first co-divide epoch
    resumed: dict[str, torch.Tensor] = {}
    out = run(tmp_path / "b", state_out=resumed)
    assert whole["loss_hist"].shape == (2, 2, 256) and whole.keys() == resumed.keys()
    for k, v in whole.items():
        assert torch.equal(v, resumed[k]), k
    assert torch.equal(ref.test_logits, out.test_logits) and ref.extra == out.extra


def test_baseline_and_finetune_train_on_the_same_labels(tmp_path, monkeypatch):
    """run_finetunes and run_baseline of one cell see identical noisy labels; the row is well-formed."""
    import pandas as pd

    from ltsweep.data import cell
    from ltsweep.planning.plan import make_plan
    from ltsweep.store.results import load_results
    from ltsweep.train import finetune as stacked
    from ltsweep.units.finetune import run_finetunes
    from ltsweep.units.pretrain import run_pretrain

    sweep = parse_sweep(
        {
            "name": "same",
            "data": {"dataset": "digits", "image_size": 16},
            "backbone": {"width": 8},
            "grid": {
                "gamma": [10],
                "noise": [0.4],
                "seeds": [3],
                "data_seeds": [1],
                "losses": ["ce"],
            },
            "ssl": {
                "simsiam": {
                    "epochs": 1,
                    "batch_size": 64,
                    "warmup_epochs": 0,
                    "proj_hidden": 32,
                    "proj_dim": 32,
                    "pred_hidden": 16,
                    "knn_k": 10,
                    "finetune": {"epochs": 1},
                }
            },
            "baselines": {"methods": ["ce"], "epochs": 1, "batch_size": 64},
            "execution": {"device": "cpu"},
        }
    )
    ctx = RunContext(sweep, tmp_path / "run", tmp_path / "cache")
    plan = make_plan(sweep)
    run_pretrain(ctx, plan.pretrains[0])

    seen: dict[str, np.ndarray] = {}
    real_stacked = stacked.train_stacked

    def spy_stacked(train_x, test_x, num_classes, head, trials, head_init=None):
        seen["finetune"] = trials[0].labels.copy()
        return real_stacked(train_x, test_x, num_classes, head, trials, head_init)

    monkeypatch.setattr(stacked, "train_stacked", spy_stacked)
    (ft_row,) = run_finetunes(ctx, plan.finetunes, "ft")

    real_train = unit_mod.train_unit

    def spy_train(ctx_, unit, train):
        seen["baseline"] = train.labels.copy()
        seen["index"] = train.index.copy()
        return real_train(ctx_, unit, train)

    monkeypatch.setattr(unit_mod, "train_unit", spy_train)
    (unit,) = plan_baselines(sweep)
    row = run_baseline(ctx, unit)

    np.testing.assert_array_equal(seen["baseline"], seen["finetune"])
    data = cell.dataset_for(sweep)
    np.testing.assert_array_equal(seen["index"], cell.training_subset(data, 10, 1))
    assert (seen["baseline"] != data.train.labels[seen["index"]]).any()  # noise was applied
    assert row["actual_noise"] == ft_row["actual_noise"] and row["n_train"] == ft_row["n_train"]
    assert (ctx.cache_dir / "baseline" / unit.key / "last.pt").is_file()

    df = load_results(ctx.run_dir)
    got = df[df["stage"] == "single-stage"].iloc[0]
    assert (got["method"], got["loss"], got["epochs"]) == ("ce", "ce", 1)
    # a text that does not apply is missing (None), like a number that does not (NaN)
    assert pd.isna(got["head"]) and pd.isna(got["pretrain_key"]) and got["pretrain_epochs"] == 0
    assert math.isnan(got["knn_acc"]) and math.isnan(got["clean_fraction"])
    assert 0 <= got["acc"] <= 1 and len(got["class_acc"]) == 10 and got["status"] == "ok"
    # a second run finds the finished checkpoint and only evaluates: same answer
    again = run_baseline(ctx, unit)
    assert again["acc"] == row["acc"]


def test_failed_baseline_writes_a_failed_row(tmp_path, monkeypatch):
    from ltsweep.store.results import load_results

    sweep = _sweep(methods=["ce"], epochs=1)
    ctx = RunContext(sweep, tmp_path / "run", tmp_path / "cache")

    def boom(*args, **kwargs):
        raise RuntimeError("no luck")

    monkeypatch.setattr(unit_mod, "train_unit", boom)
    unit = plan_baselines(sweep)[0]
    with pytest.raises(RuntimeError, match="no luck"):
        run_baseline(ctx, unit)
    df = load_results(ctx.run_dir, include_failed=True)
    assert list(df["status"]) == ["failed"] and "no luck" in df["error"][0]
    assert (ctx.run_dir / "logs" / f"baseline-{unit.key}.error.txt").is_file()
