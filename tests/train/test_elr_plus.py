"""ELR+ (two networks, weight averaging, mixup) on the shared baseline loop [shengliu66/ELR,
ELR_plus]: its loss by hand, its settings against the reference configs, a tiny run, resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ltsweep.data import long_tail_indices, symmetric_noise
from ltsweep.sweep.baseline_settings import BaselineSettings, ELRPlusSettings
from ltsweep.sweep.schema import parse_sweep
from ltsweep.train.baselines.common import Backbone, Budget, TrainSet
from ltsweep.train.baselines.elr_plus import (
    ELRPlusParams,
    elr_plus_loss,
    ema_momentum,
    ema_update,
    sigmoid_rampup,
    train_elr_plus,
    update_history,
)
from ltsweep.units.baseline import plan_baselines

BACKBONE = Backbone("resnet18", 8, "cifar")
CPU = torch.device("cpu")

#: shengliu66/ELR ELR_plus/config_cifar10.json and config_cifar100.json, the fields ELR+ reads
REFERENCE_CONFIGS = {
    "cifar10": {
        "mixup_alpha": 1, "coef_step": 0, "ema_alpha": 0.997, "ema_update": True,
        "ema_step": 40000, "beta": 0.7, "lambda": 3, "milestones": [150], "epochs": 200,
        "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
    },
    "cifar100": {
        "mixup_alpha": 1, "coef_step": 40000, "ema_alpha": 0.997, "ema_update": True,
        "ema_step": 40000, "beta": 0.9, "lambda": 7, "milestones": [200], "epochs": 250,
        "lr": 0.02, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
    },
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread, as in a worker


def tiny_set(data, n: int, noise: float, seed: int) -> TrainSet:
    index = long_tail_indices(data.train.labels, 10, 1.0, seed)
    index = np.sort(np.random.default_rng(seed).choice(index, n, replace=False))
    clean = data.train.labels[index]
    noisy = symmetric_noise(clean, 10, noise, seed)
    return TrainSet(data.train, index, noisy.labels, clean, 10, data.mean, data.std)


def budget(epochs: int) -> Budget:
    return Budget(epochs, 64, "sgd", 0.9, 0.05, 5e-4, "cosine", 2, 0.5)


def test_defaults_are_the_reference_configs():
    s = BaselineSettings()
    for dataset, cfg in REFERENCE_CONFIGS.items():
        v = s.elr_plus.resolved(dataset)
        assert (v.beta, v.lam, v.mixup_alpha) == (cfg["beta"], cfg["lambda"], cfg["mixup_alpha"])
        assert (v.ema_alpha, v.ema_rampup_steps) == (cfg["ema_alpha"], cfg["ema_step"])
        assert v.coef_rampup_steps == cfg["coef_step"]
        assert v.lr_decay_at == cfg["milestones"][0] / cfg["epochs"]
        assert v.label_times_target == (dataset == "cifar100")  # model/loss.py's C == 100
        # the shared budget's defaults are the reference's optimiser and batch
        assert (s.lr, s.momentum, s.weight_decay) == (
            cfg["lr"],
            cfg["momentum"],
            cfg["weight_decay"],
        )
        assert s.batch_size == cfg["batch_size"]
    assert ELRPlusSettings(lam=1.0).resolved("cifar100").lam == 1.0
    assert ELRPlusSettings(lam=1.0).resolved("cifar100").beta == 0.9
    with pytest.raises(ValueError, match="no settings for data set 'clothing1m'"):
        ELRPlusSettings().resolved("clothing1m")


def test_rampups_and_ema_by_hand():
    assert sigmoid_rampup(5, 0) == 1.0
    assert sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(20, 10) == 1.0
    p = ELRPlusParams(ema_alpha=0.997, ema_rampup_steps=100)
    assert ema_momentum(1, p) == pytest.approx(0.997 * math.exp(-5 * (1 - 2 / 100) ** 2))
    assert ema_momentum(1, ELRPlusParams(ema_rampup_steps=0)) == pytest.approx(0.5)
    assert ema_momentum(10**6, ELRPlusParams(ema_rampup_steps=0)) == 0.997
    net, ema = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(1.0), ema.weight.fill_(3.0), net.bias.fill_(0.0), ema.bias.fill_(2.0)
    ema_update(ema, net, 0.75)
    assert torch.allclose(ema.weight, torch.full((1, 2), 2.5)) and float(ema.bias.detach()) == 1.5


def test_history_and_loss_by_hand():
    hist = torch.zeros(4, 3)
    teacher = torch.log(torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]))
    update_history(hist, torch.tensor([1, 3]), teacher, beta=0.7)
    assert torch.allclose(hist[1], torch.tensor([0.06, 0.09, 0.15]))
    assert torch.allclose(hist[3], torch.tensor([0.18, 0.06, 0.06])) and hist[0].sum() == 0
    update_history(hist, torch.tensor([1]), teacher[:1], beta=0.7)
    assert torch.allclose(
        hist[1], 0.7 * torch.tensor([0.06, 0.09, 0.15]) + 0.3 * torch.tensor([0.2, 0.3, 0.5])
    )

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    y = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.3, 0.7]])  # mixed one-hot labels, lambda 0.7
    q = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]])
    p = np.exp(logits.numpy()) / np.exp(logits.numpy()).sum(1, keepdims=True)
    ce = -np.mean((y.numpy() * np.log(p)).sum(1))
    reg = np.mean(np.log(1 - (q.numpy() * np.clip(p, 1e-4, 1 - 1e-4)).sum(1)))
    got = elr_plus_loss(logits, y, q, weight=3.0, label_times_target=False)
    assert float(got) == pytest.approx(ce + 3.0 * reg, rel=1e-6)
    # the CIFAR-100 branch: the label becomes y * q, renormalised
    yq = y.numpy() * q.numpy()
    yq /= yq.sum(1, keepdims=True)
    ce100 = -np.mean((yq * np.log(p)).sum(1))
    got = elr_plus_loss(logits, y, q, weight=7.0, label_times_target=True)
    assert float(got) == pytest.approx(ce100 + 7.0 * reg, rel=1e-6)


def test_plan_has_elr_plus_with_its_own_keys():
    sweep = parse_sweep(
        {
            "name": "e",
            "data": {"dataset": "cifar100"},
            "grid": {"gamma": [1], "noise": [0.2]},
            "baselines": {"methods": ["elr", "elr+"]},
        }
    )
    elr, plus = plan_baselines(sweep)
    assert (elr.method, plus.method) == ("elr", "elr+") and elr.key != plus.key
    assert plus.settings["params"]["beta"] == 0.9 and plus.settings["params"]["label_times_target"]


def test_elr_plus_learns_noisy_digits(digits, tmp_path):
    train = tiny_set(digits, 600, noise=0.2, seed=0)
    params = ELRPlusParams(ema_rampup_steps=20, lr_decay_at=0.75)
    out = train_elr_plus(train, digits.test, BACKBONE, budget(4), params, CPU, tmp_path, 0)
    assert out.epochs == 4 and all(math.isfinite(v) for v in out.loss_history)
    assert float((out.test_logits.argmax(1).numpy() == digits.test.labels).mean()) > 0.3


class Stop(Exception):
    pass


def test_elr_plus_resumes_bit_identically(digits, tmp_path):
    train = tiny_set(digits, 256, noise=0.4, seed=1)
    params = ELRPlusParams(ema_rampup_steps=10, coef_rampup_steps=5, label_times_target=True)

    def run(d, **kw):
        return train_elr_plus(train, digits.test, BACKBONE, budget(3), params, CPU, d, 7, 1, **kw)

    def stop(epoch):
        if epoch == 2:
            raise Stop

    whole: dict[str, torch.Tensor] = {}
    ref = run(tmp_path / "a", state_out=whole)
    with pytest.raises(Stop):
        run(tmp_path / "b", on_epoch=stop)
    resumed: dict[str, torch.Tensor] = {}
    out = run(tmp_path / "b", state_out=resumed)
    assert whole["elr_hist"].shape == (2, 256, 10) and whole["elr_hist"].abs().sum() > 0
    assert torch.equal(whole["elr_hist"], resumed["elr_hist"])
    assert torch.equal(ref.test_logits, out.test_logits) and ref.loss_history == out.loss_history
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for i in range(2):
        for k, v in a["models"][i].items():
            assert torch.equal(v, b["models"][i][k]), k
        for k, v in a["ema"][i].items():
            assert torch.equal(v, b["ema"][i][k]), k
        # the weight average differs from its network (it is an average, not a copy)
        assert not torch.equal(a["ema"][i]["fc.weight"], a["models"][i]["fc.weight"])


def test_elr_plus_unit_runs_and_writes_its_row(tmp_path):
    """The unit's path: plan -> method_params -> ELRPlusParams -> fit -> one result row."""
    from ltsweep.store.results import load_results
    from ltsweep.units.base import RunContext
    from ltsweep.units.baseline import run_baseline

    sweep = parse_sweep(
        {
            "name": "ep",
            "data": {"dataset": "digits", "image_size": 16},
            "backbone": {"width": 4},
            "grid": {"gamma": [1], "noise": [0.2]},
            "baselines": {"methods": ["elr+"], "epochs": 1, "batch_size": 128},
            "execution": {"device": "cpu"},
        }
    )
    (unit,) = plan_baselines(sweep)
    ctx = RunContext(sweep, tmp_path / "run", tmp_path / "cache")
    row = run_baseline(ctx, unit)
    assert row["method"] == "elr+" and row["loss"] == "elr+" and 0 <= row["acc"] <= 1
    assert (ctx.cache_dir / "baseline" / unit.key / "last.pt").is_file()
    assert list(load_results(ctx.run_dir)["method"]) == ["elr+"]


def _sweep_cells():
    """(data set, gamma, epochs, batch) of every ELR+ cell of the paper's sweep files."""
    from ltsweep.sweep.schema import load_sweep
    from tests.helpers import REPO

    for name in ("cifar10", "cifar100"):
        sweep = load_sweep(REPO / "sweeps" / f"{name}.yaml")
        if "elr+" not in sweep.baselines.methods:
            continue
        for gamma in sweep.grid.gamma:
            yield sweep, gamma


@pytest.mark.parametrize(
    "dataset,gamma", [("cifar10", 1), ("cifar10", 50), ("cifar10", 100), ("cifar100", 10)]
)
def test_ema_momentum_reaches_0997_by_the_last_epoch(dataset, gamma):
    """The reference's 40,000-step ramps end at epoch 102.3 of its 391 batches per epoch; on
    a long-tailed subset they are stretched to end at that epoch too, not cut short."""
    from ltsweep.data.imbalance import long_tail_counts
    from ltsweep.train.baselines.common import batch_bounds
    from ltsweep.train.baselines.elr_plus import ramp_length

    n_max, classes = {"cifar10": (5000, 10), "cifar100": (500, 100)}[dataset]
    n = sum(long_tail_counts(n_max, classes, gamma))
    steps = len(batch_bounds(n, 128))
    p = ELRPlusParams(**BaselineSettings().elr_plus.resolved(dataset).model_dump())
    last = 200 * steps
    assert ema_momentum(last, p, steps) == pytest.approx(0.997)
    # the ramp ends at the reference's epoch, whatever the subset's size
    assert ramp_length(p.ema_rampup_steps, p, steps) / steps == pytest.approx(40000 / 391)
    if dataset == "cifar10" and gamma == 100:  # n 12,406: 97 batches; unstretched: 0.265
        assert (n, steps) == (12406, 97)
        assert ema_momentum(last, p) == pytest.approx(0.265, abs=1e-3)
    if p.coef_rampup_steps:  # CIFAR-100: the regulariser's weight reaches lambda too
        assert sigmoid_rampup(last, ramp_length(p.coef_rampup_steps, p, steps)) == 1.0


def test_every_elr_plus_cell_of_the_paper_sweeps_ends_at_full_momentum():
    from ltsweep.data.imbalance import long_tail_counts
    from ltsweep.train.baselines.common import batch_bounds

    cells = list(_sweep_cells())
    assert {(s.data.dataset, g) for s, g in cells} >= {("cifar10", 100), ("cifar100", 10)}
    for sweep, gamma in cells:
        bs = sweep.baselines
        dataset = sweep.data.dataset
        n_max, classes = {"cifar10": (5000, 10), "cifar100": (500, 100)}[dataset]
        steps = len(batch_bounds(sum(long_tail_counts(n_max, classes, gamma)), bs.batch_size))
        p = ELRPlusParams(**bs.elr_plus.resolved(dataset).model_dump())
        epochs = bs.budget("elr+")["epochs"]
        assert ema_momentum(epochs * steps, p, steps) == pytest.approx(0.997), (dataset, gamma)
