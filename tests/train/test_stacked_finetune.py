"""The stacked fine-tune trainer against the plain one-trial-at-a-time reference."""

import math

import numpy as np
import pytest
import torch

from ltsweep.data import symmetric_noise
from ltsweep.train.finetune import (
    CHUNK_COST,
    HeadSpec,
    Trial,
    chunk_size,
    lay_out,
    train_reference,
    train_stacked,
)
from ltsweep.train.stacked_adam import StackedAdam, stacked_optimizer

C, D, H = 5, 16, 32


@pytest.fixture(scope="module")
def features():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(C, D, generator=g) * 1.5
    ytr = torch.arange(300) % C
    yte = torch.arange(100) % C
    xtr = centers[ytr] + torch.randn(300, D, generator=g)
    xte = centers[yte] + torch.randn(100, D, generator=g)
    head_init = {
        "w1": torch.randn(H, D, generator=g) / math.sqrt(D),
        "b1": torch.randn(H, generator=g) * 0.1,
        "bn_weight": torch.rand(H, generator=g) + 0.5,
        "bn_bias": torch.randn(H, generator=g) * 0.1,
        "bn_mean": torch.randn(H, generator=g) * 0.1,
        "bn_var": torch.rand(H, generator=g) + 0.5,
    }
    return xtr, xte, ytr.numpy(), yte, head_init


def _trials(ytr, lr):
    return [
        Trial(
            symmetric_noise(ytr, C, noise, seed).labels, loss, lr, 1e-4, seed, 1.0, 4.0, math.log(C)
        )
        for noise in (0.0, 0.5)
        for loss in ("ce", "ce+sl", "la", "la+sl")
        for seed in (0, 1)
    ]


@pytest.mark.parametrize("mode,lr", [("linear", 1e-2), ("full", 3e-3), ("last", 1e-2)])
def test_stacked_matches_reference_for_every_loss(features, mode, lr):
    xtr, xte, ytr, yte, head_init = features
    head = HeadSpec(mode, epochs=4, batch_size=64)
    trials = _trials(ytr, lr)
    stacked = train_stacked(xtr, xte, C, head, trials, head_init)
    for i, trial in enumerate(trials):
        alone = train_reference(xtr, xte, C, head, trial, head_init)
        # stated tolerance: the same predictions on >= 99 % of the test set (batched vs
        # unbatched matmuls differ only in rounding)
        agree = (stacked[i] == alone).float().mean().item()
        assert agree >= 0.99, (mode, trial.loss, agree)
    acc = (stacked == yte).float().mean(1)
    assert acc[:8].min() > 0.8  # the clean trials learn


def test_a_trial_does_not_depend_on_its_group(features):
    xtr, xte, ytr, _, head_init = features
    head = HeadSpec("full", epochs=3, batch_size=50)
    trials = _trials(ytr, 3e-3)
    together = train_stacked(xtr, xte, C, head, trials, head_init)
    alone = train_stacked(xtr, xte, C, head, [trials[5]], head_init)
    assert torch.equal(together[5], alone[0])


def test_last_mode_needs_the_projection_block(features):
    xtr, xte, ytr, _, _ = features
    with pytest.raises(ValueError, match="head_init"):
        train_stacked(xtr, xte, C, HeadSpec("last", 1, 32), _trials(ytr, 1e-2)[:1], None)


def _brute_force_chunk_size(sizes: list[int], most: int) -> int:
    """The documented cost, minimised by trying every g and every tie the long way."""
    best = None
    for g in range(1, max(1, min(most, max(sizes))) + 1):
        chunks = sum(math.ceil(n / g) for n in sizes)
        key = (chunks * (g + CHUNK_COST), -g)
        best = key if best is None or key < best else best
    return -best[1]


@pytest.mark.parametrize(
    "sizes,most", [([40, 40, 40], 819), ([40, 1], 819), ([7], 4), ([3, 5, 2], 3), ([1], 1)]
)
def test_chunk_size_is_the_cheapest_layout(sizes, most):
    assert chunk_size(sizes, most) == _brute_force_chunk_size(sizes, most)


def test_equal_seed_groups_are_neither_padded_nor_split():
    assert chunk_size([40, 40, 40], 819) == 40
    layout = lay_out([Trial(np.zeros(3, int), "ce", 0.1, 0.0, s) for s in [0, 1, 0, 1]], 819)
    assert layout.slots == 2 and layout.rows == 4 and sorted(layout.row_of_trial) == [0, 1, 2, 3]
    # chunk j holds one seed only
    seeds = [0, 1, 0, 1]
    for i, r in enumerate(layout.row_of_trial):
        assert layout.seeds[layout.chunk_seed[r // layout.slots]] == seeds[i]


@pytest.mark.parametrize("mode,lr", [("linear", 1e-2), ("full", 3e-3)])
def test_uneven_seeds_and_per_trial_lr_match_reference(features, mode, lr, monkeypatch):
    """Padded chunks (5 trials of seed 0, 2 of seed 1, chunks of 2) and per-trial lr / weight
    decay (the StackedAdam path) still give every trial its own result."""
    import ltsweep.train.finetune as ft

    xtr, xte, ytr, _, head_init = features
    head = HeadSpec(mode, epochs=3, batch_size=64)
    # chunks of at most 2 trials: 3 chunks for seed 0 (one padded), 1 for seed 1
    monkeypatch.setattr(ft, "CHUNK_ACTIVATIONS", 2 * 64 * (H if mode == "full" else C))
    losses = ["ce", "la+sl", "ce+sl", "la", "ce", "la+sl", "la"]
    seeds = [0, 0, 1, 0, 0, 1, 0]
    trials = [
        Trial(
            symmetric_noise(ytr, C, 0.3, seed).labels,
            loss,
            lr * (1 + i % 3),
            [0.0, 1e-3][i % 2],
            seed,
            1.0,
            4.0,
            math.log(C),
        )
        for i, (loss, seed) in enumerate(zip(losses, seeds, strict=True))
    ]
    layout = lay_out(trials, ft.CHUNK_ACTIVATIONS // (64 * (H if mode == "full" else C)))
    assert layout.slots == 2 and layout.rows == 8  # one padding row
    stacked = train_stacked(xtr, xte, C, head, trials, head_init)
    for i, trial in enumerate(trials):
        alone = train_reference(xtr, xte, C, head, trial, head_init)
        assert (stacked[i] == alone).float().mean().item() >= 0.99, (i, trial.loss)


def test_uniform_settings_use_torch_fused_adam_and_mixed_ones_stacked_adam():
    p = [torch.zeros(2, 3, 4, requires_grad=True)]
    same = stacked_optimizer(p, torch.full((2, 3), 0.1), torch.zeros(2, 3))
    assert isinstance(same, torch.optim.Adam) and same.defaults["fused"]
    mixed = stacked_optimizer(p, torch.tensor([[0.1] * 3, [0.2] * 3]), torch.zeros(2, 3))
    assert isinstance(mixed, StackedAdam)


def test_stacked_adam_is_torch_adam_row_by_row():
    """Per-row lr / weight decay: each row follows torch.optim.Adam with its own settings."""
    g = torch.Generator().manual_seed(0)
    init = torch.randn(3, 5, generator=g)
    lrs, wds = torch.tensor([0.1, 0.01, 0.05]), torch.tensor([0.0, 0.1, 0.01])
    grads = [torch.randn(3, 5, generator=g) for _ in range(4)]
    stacked = init.clone().requires_grad_(True)
    opt = StackedAdam([stacked], lrs, wds)
    for grad in grads:
        stacked.grad = grad.clone()
        opt.step()
        opt.zero_grad()
    for r in range(3):
        row = init[r].clone().requires_grad_(True)
        ref = torch.optim.Adam([row], lr=float(lrs[r]), weight_decay=float(wds[r]))
        for grad in grads:
            row.grad = grad[r].clone()
            ref.step()
        torch.testing.assert_close(stacked[r].detach(), row.detach())


_PEAK = r"""
import re, sys, torch, numpy as np
from ltsweep.train.finetune import HeadSpec, Trial, train_stacked
T, n, d, h, c = int(sys.argv[1]), int(sys.argv[2]), 512, 2048, 10
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
x, xt = torch.randn(n, d, generator=g), torch.randn(100, d, generator=g)
init = {"w1": torch.randn(h, d, generator=g) / d**0.5, "b1": torch.zeros(h),
        "bn_weight": torch.ones(h), "bn_bias": torch.zeros(h),
        "bn_mean": torch.zeros(h), "bn_var": torch.ones(h)}
labels = np.arange(n) % c
trials = [Trial(labels, "la+sl", 1e-3, 0.0, 0) for _ in range(T)]
train_stacked(x, xt, c, HeadSpec("full", 1, 256), trials, init)
# VmHWM: this process's peak RSS (ru_maxrss would keep the forking parent's, on Linux)
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024)
"""


@pytest.mark.slow  # ~30 s: two subprocesses train a wide-head group
def test_group_memory_estimate_is_near_the_measured_peak():
    """`estimate.finetune_bytes` (what cuts groups to `finetune_memory_gb`) against the peak
    RSS added per trial by a real wide-head group: within a factor of 2."""
    import subprocess
    import sys

    from ltsweep.planning.plan import make_plan
    from ltsweep.sweep.estimate import finetune_bytes, subset_size
    from ltsweep.sweep.schema import load_sweep

    sweep = load_sweep("sweeps/cifar10.yaml")
    unit = next(u for u in make_plan(sweep).finetunes if u.head == "full" and u.gamma == 100)
    assert sweep.backbone.width == 64 and sweep.ssl_settings(unit.method).proj_hidden == 2048
    n = subset_size(5000, 10, 100)  # CIFAR-10 at gamma 100: 12,406 images

    def peak(trials: int) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _PEAK, str(trials), str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.split()[-1])

    small, large = peak(2), peak(18)
    measured = (large - small) / 16
    estimated = finetune_bytes(sweep, unit)
    assert 0.5 <= estimated / measured <= 2.0, (estimated / 2**20, small, large)
