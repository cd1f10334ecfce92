"""ELR, Early-Learning Regularisation (Liu et al., NeurIPS 2020) [shengliu66/ELR, model/loss.py].

Each training sample i keeps a target t_i, a temporal ensemble of the network's own
predictions: t_i <- beta t_i + (1 - beta) p_i, with p_i the softmax clamped to
[1e-4, 1 - 1e-4], detached and renormalised (as the reference does). The loss is
CE(logits, noisy label) + lambda * mean_i log(1 - <t_i, p_i>): minimising log(1 - <t, p>)
keeps p close to the targets learnt early, before the noisy labels are memorised.

The target buffer is sized to the (imbalanced) training subset and indexed by position in
it, never by the index of the 50,000-image pool; it starts at zero like the reference's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ltsweep.train.baselines.common import Outcome
from ltsweep.train.baselines.loop import LossFn, Training, fit
from ltsweep.train.baselines.supervised import OneNetwork

CLAMP = 1e-4


@dataclass(frozen=True)
class ELRParams:
    beta: float
    lam: float


def clamped_softmax(logits: torch.Tensor) -> torch.Tensor:
    """softmax clamped to [1e-4, 1 - 1e-4]: log(1 - <t, p>) stays finite."""
    return torch.clamp(F.softmax(logits, dim=1), CLAMP, 1.0 - CLAMP)


@torch.no_grad()
def update_targets(
    target: torch.Tensor, positions: torch.Tensor, probs: torch.Tensor, beta: float
) -> None:
    """t_i <- beta t_i + (1 - beta) p_i / sum(p_i) for the batch's positions, in place."""
    p = probs.detach()
    target[positions] = beta * target[positions] + (1 - beta) * (p / p.sum(dim=1, keepdim=True))


def elr_regulariser(target_rows: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """mean_i log(1 - <t_i, p_i>); the gradient flows through p only."""
    return torch.log(1 - (target_rows * probs).sum(dim=1)).mean()


def elr_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    target: torch.Tensor,
    positions: torch.Tensor,
    params: ELRParams,
) -> torch.Tensor:
    """Update the batch's targets, then CE + lambda * regulariser (the reference's order)."""
    probs = clamped_softmax(logits)
    update_targets(target, positions, probs, params.beta)
    return F.cross_entropy(logits, labels) + params.lam * elr_regulariser(target[positions], probs)


class ELR(OneNetwork):
    """One network; the per-sample targets are its checkpointed buffer `target`."""

    def __init__(self, params: ELRParams, buffers: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__(buffers)
        self.params = params

    def make_loss(self, t: Training) -> LossFn:
        target = torch.zeros(len(t.train), t.train.num_classes, device=t.device)
        self.buffers["target"] = target
        labels = t.labels
        return lambda logits, pos: elr_loss(logits, labels[pos], target, pos, self.params)


def train_elr(
    train, test, backbone, budget, params: ELRParams, *rest, state=None, **opts
) -> Outcome:
    """Train with ELR; `state` (optional) receives the target buffer, so tests can inspect it.

    The other arguments are `fit`'s, in its order (see `train_supervised`).
    """
    return fit(ELR(params, state), train, test, backbone, budget, *rest, **opts)
