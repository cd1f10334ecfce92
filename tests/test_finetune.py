"""The stacked fine-tune trainer against the plain one-trial-at-a-time reference."""

import math

import pytest
import torch

from ltsweep.data import symmetric_noise
from ltsweep.finetune import HeadSpec, Trial, train_reference, train_stacked

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
