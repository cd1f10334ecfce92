"""The GPU-hours estimate of `ltsweep plan`: FLOP counts against torch, arithmetic by hand."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ltsweep.planning.describe import describe_plan
from ltsweep.planning.plan import make_plan
from ltsweep.sweep.baseline_settings import BASELINE_METHODS
from ltsweep.sweep.estimate import (
    Costs,
    estimate,
    mlp_macs,
    pool_per_class,
    resnet18_macs,
    ssl_flops,
    subset_size,
)
from ltsweep.sweep.schema import parse_sweep
from ltsweep.sweep.ssl_settings import SSL_METHODS
from ltsweep.units.baseline import plan_baselines


def _torch_flops(module, *inputs) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


def _network_flops(fn, *inputs) -> int:
    """FLOPs inside the networks `fn` calls (the modules it enters), leaving out what the loss
    computes outside them (NT-Xent's similarity matrix, Barlow Twins' cross-correlation): a
    few FLOPs next to the networks', which the cost model does not count."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(*inputs)
    by_module = counter.get_flop_counts()  # nested names ("ResNet18.layers.0") count twice
    return sum(
        sum(ops.values()) for name, ops in by_module.items() if name != "Global" and "." not in name
    )


@pytest.mark.parametrize(
    "width,size,stem",
    [(4, 16, "cifar"), (3, 13, "cifar"), (4, 40, "imagenet"), (2, 57, "imagenet")],
)
def test_resnet18_count_matches_flop_counter(width, size, stem):
    import torch

    from ltsweep.models.resnet import ResNet18

    net = ResNet18(width=width, stem=stem).eval()
    batch = 2
    x = torch.randn(batch, 3, size, size)
    # FlopCounterMode counts 2 FLOPs per multiply-add of the convolutions
    assert _torch_flops(net, x) == 2 * batch * resnet18_macs(width, size, stem)


def test_resnet18_standard_sizes():
    assert resnet18_macs(64, 32, "cifar") == pytest.approx(0.556e9, rel=0.01)  # "0.56 GFLOPs"
    assert resnet18_macs(64, 224, "imagenet") == pytest.approx(1.82e9, rel=0.01)  # "1.82 GFLOPs"
    # width^2 and image area (the stem's conv scales with width only: a small term)
    assert resnet18_macs(32, 32, "cifar") == pytest.approx(
        resnet18_macs(64, 32, "cifar") / 4, rel=0.01
    )
    assert resnet18_macs(64, 64, "cifar") == 4 * resnet18_macs(64, 32, "cifar")


@pytest.mark.parametrize("method", list(SSL_METHODS))
def test_ssl_forward_count_matches_flop_counter(method):
    """One training forward of both views (+ BYOL's target) is what ssl_flops counts, for every
    registered method: its cost hints (SSL_METHODS) against the module its trainer builds."""
    import torch

    from ltsweep.models.resnet import build_encoder
    from ltsweep.train.selfsup.base import build_method

    spec = SSL_METHODS[method]
    extra = {"pred_hidden": 8} if spec.predictor else {}
    settings = spec.settings(proj_hidden=32, proj_dim=16, **extra)
    torch.manual_seed(0)
    model = build_method(method, build_encoder("resnet18", 4, "cifar"), settings)
    batch, size = 4, 12
    x1, x2 = torch.randn(batch, 3, size, size), torch.randn(batch, 3, size, size)
    costs = Costs(
        encoder=2 * resnet18_macs(4, size, "cifar"), feat_dim=32, num_classes=10, n_test=0
    )
    trained, target = ssl_flops(method, settings, costs)
    counted = _network_flops(model.loss, x1, x2)
    assert counted == batch * (trained + target)
    assert (target > 0) == spec.target


def test_subset_sizes_follow_the_long_tail_profile():
    from ltsweep.data import long_tail_counts

    for n, c, g in [(5000, 10, 100), (500, 100, 10), (134, 10, 10), (71428, 14, 50), (7, 2, 1)]:
        assert subset_size(n, c, g) == sum(long_tail_counts(n, c, g))
    assert subset_size(5000, 10, 100) == 12_406  # PROTOCOL.md


def test_digits_pool_is_the_smallest_class_after_the_test_split():
    from ltsweep.data.digits import load_digits_dataset
    from ltsweep.sweep.schema import DataSettings

    for per_class in (20, 40):
        data = load_digits_dataset(image_size=8, test_per_class=per_class)
        counts = [int((data.train.labels == c).sum()) for c in range(10)]
        settings = DataSettings(dataset="digits", test_per_class=per_class)
        assert pool_per_class(settings) == min(counts)


TINY = {
    "name": "e",
    "data": {"dataset": "digits", "image_size": 8, "test_per_class": 40},
    "backbone": {"width": 4},
    "grid": {"ssl": ["simsiam"], "gamma": [1], "noise": [0.0, 0.8], "losses": ["ce"]},
    "ssl": {
        "simsiam": {
            "epochs": 10,
            "knn_every": 4,
            "proj_hidden": 32,
            "proj_dim": 16,
            "pred_hidden": 8,
        }
    },
    "baselines": {
        "methods": ["ce", "dividemix"],
        "epochs": 4,
        "dividemix": {"warmup_epochs": 1, "schedule": "shared"},  # the 4 epochs of the budget
    },
    "execution": {"gpu_tflops": 2.0},
}


def test_estimate_of_a_tiny_sweep_by_hand():
    sweep = parse_sweep(TINY)
    plan = make_plan(sweep)
    baselines = plan_baselines(sweep)
    got = estimate(sweep, plan.pretrains, plan.finetunes, baselines)

    n, n_test, d, c = 10 * (174 - 40), 400, 32, 10  # gamma 1: every class whole; 8 * width
    enc = 2 * resnet18_macs(4, 8, "cifar")
    # pre-train: 2 views x 3 (forward + backward) x (encoder + projector 32-32-16 + predictor
    # 16-8-16), 10 epochs; kNN monitor at epochs 4, 8, 10 and the features of epoch 10
    step = 2 * (enc + 2 * (32 * 32 + 32 * 16) + 2 * (16 * 8 + 8 * 16))
    pretrain = 10 * n * 3 * step + (3 + 1) * (n + n_test) * enc
    # fine-tunes (10 epochs): noise 0 trains the whole head 32-32-10; noise 0.8 > 0.6 only
    # the last FC, on the hidden block computed once
    full = 2 * (32 * 32 + 32 * 10)
    last = 2 * 32 * 10
    finetune = (10 * n * 3 * full + n_test * full) + (
        2 * 32 * 32 * (n + n_test) + 10 * n * 3 * last + n_test * last
    )
    # baselines (4 epochs): encoder + FC 32 -> 10
    f = enc + 2 * d * c
    ce = 4 * n * 3 * f + n_test * f
    flip = 0.8 * 9 / 10

    def dividemix(labelled):  # 1 warm-up epoch of 2 nets, 3 MixMatch epochs, 2 test passes
        return 2 * n * 3 * f + 3 * 2 * (n * f + labelled * 18 * f) + 2 * n_test * f

    baseline = 2 * ce + dividemix(n) + dividemix(n * (1 - flip))

    assert len(plan.pretrains) == 1 and len(plan.finetunes) == 2 and len(baselines) == 4
    assert got.pretrain == pytest.approx(pretrain)
    assert got.finetune == pytest.approx(finetune)
    assert got.baselines == pytest.approx(baseline)
    assert got.total_hours == pytest.approx((pretrain + finetune + baseline) / 2e12 / 3600)
    assert (
        got.line().startswith("  estimate: ")
        and "at 2 TFLOP/s sustained (execution.gpu_tflops)" in got.line()
    )
    assert mlp_macs([32, 32, 10]) == 32 * 32 + 32 * 10


@pytest.mark.parametrize("method", list(BASELINE_METHODS))
def test_every_baseline_is_priced(method):
    """Each registered baseline's estimate is at least its networks' plain training (a step per
    sample and epoch) and test forward; a one-network method without hints is exactly that."""
    sweep = parse_sweep(TINY | {"baselines": TINY["baselines"] | {"methods": [method]}})
    units = plan_baselines(sweep)
    spec = BASELINE_METHODS[method]
    n, n_test = 10 * (174 - 40), 400
    f = 2 * resnet18_macs(4, 8, "cifar") + 2 * 32 * 10
    for unit in units:
        plain = spec.networks * (unit.epochs * n * 3 * f + n_test * f)
        got = estimate(sweep, [], [], [unit]).baselines
        assert got >= plain * (1 - 1e-9)
        if spec.networks == 1 and not spec.extra_forwards and spec.training_flops is None:
            assert got == pytest.approx(plain)


def test_estimate_line_of_the_paper_grids():
    big = parse_sweep(
        {
            "name": "b",
            "data": {"dataset": "cifar10"},
            "grid": {"ssl": ["simsiam"], "gamma": [100]},
            "baselines": {"methods": ["ce"]},
        }
    )
    plan = make_plan(big)
    e = estimate(big, plan.pretrains, plan.finetunes, plan_baselines(big))
    # SimSiam, 800 epochs of 12,406 images, 2 views x 3 x 1.11 GFLOP (+ the small heads)
    assert e.hours(e.pretrain) == pytest.approx(800 * 12_406 * 6 * 1.11e9 / 25e12 / 3600, rel=0.05)
    assert e.hours(e.baselines) == pytest.approx(200 * 12_406 * 3 * 1.11e9 / 25e12 / 3600, rel=0.05)
    line = e.line()
    assert "estimate: " in line and " GPU hours (pre-train " in line and "baselines " in line
    clothing = parse_sweep({"name": "c", "data": {"dataset": "clothing1m"}})
    plan = make_plan(clothing)
    assert "(approximate)" in estimate(clothing, plan.pretrains, plan.finetunes).line()


def test_plan_prints_what_is_still_to_run(tmp_path):
    from ltsweep.store import cache as store

    sweep = parse_sweep(TINY)
    run, cache = tmp_path / "run", tmp_path / "cache"
    full = [line for line in describe_plan(sweep, run, cache).splitlines() if "estimate:" in line]
    assert len(full) == 1 and "(pre-train " in full[0]
    # the pre-train's features are stored: it drops out of the estimate
    (pre,) = make_plan(sweep).pretrains
    for epoch in pre.feature_epochs:
        path = store.features_path(cache, pre.key, epoch).with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"sha256": "x"}))
    text = describe_plan(sweep, run, cache)
    assert "(pre-train 0, baselines " in text and text != "\n".join(full)


def test_estimate_imports_no_torch():
    code = (
        "import sys; from ltsweep.sweep.schema import parse_sweep; "
        "from ltsweep.planning.plan import make_plan; "
        "from ltsweep.sweep.estimate import estimate; s = parse_sweep({'name': 'x'}); p = make_plan(s); "
        "print(estimate(s, p.pretrains, p.finetunes).line()); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
