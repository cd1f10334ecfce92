"""BYOL (Grill et al., 2020) with an EMA target network, as the paper pre-trains it.

Online: encoder -> projector (Linear-BN-ReLU-Linear, 4096 -> 256) -> predictor (same shape,
256 -> 4096 -> 256). Target: copies of the encoder and projector, never optimised, moved
after every step towards the online weights with momentum
tau = 1 - (1 - ema_start) * (cos(pi * progress) + 1) / 2 (0.99 -> 1, BYOL's cosine).
Loss: 2 - 2 cos(online prediction of one view, target projection of the other), averaged
over the batch and summed over the two directions (BYOL's L + L~).

The target is deliberately kept OUT of the module tree: `parameters()` would otherwise
hand it to the optimiser (Adam's weight decay must never touch it) and `state_dict()` would
save it a second time next to `extra_state()`. So that it still follows the method across
`.to(device)` and `.train()/.eval()`, `_apply` and `train` are extended; the checkpoint
keeps it through `extra_state()` / `load_extra_state()` (parameters and BN buffers both,
which is what makes a resumed run bit-identical).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ltsweep.models.heads import mlp
from ltsweep.train.selfsup.base import PretrainSettings, SSLMethod


class BYOLHyper(PretrainSettings, Protocol):
    """The fields of its heads and loss (`ltsweep.sweep.ssl_settings.BYOLSettings` has them)."""

    pred_hidden: int
    ema_start: float


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, stopgrad(z)), averaged over the batch (the MSE of the unit vectors)."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.detach().float(), dim=-1)).mean()


def ema_momentum(progress: float, ema_start: float) -> float:
    """Target momentum at `progress` in [0, 1]: ema_start at 0, rising by a cosine to 1 at 1."""
    return 1 - (1 - ema_start) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, parameter by parameter.

    Only parameters are averaged (BYOL, lightly and solo-learn alike): the target's
    BatchNorm buffers are its own running statistics, updated by its train-mode forwards.
    """
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(tau).add_(o.detach(), alpha=1 - tau)


class BYOL(SSLMethod):
    def __init__(self, encoder: torch.nn.Module, settings: BYOLHyper) -> None:
        super().__init__(encoder, settings)
        d = encoder.feat_dim
        self.projector = mlp([d, settings.proj_hidden, settings.proj_dim])
        self.predictor = mlp([settings.proj_dim, settings.pred_hidden, settings.proj_dim])
        self.ema_start = settings.ema_start
        target = nn.Sequential(copy.deepcopy(self.encoder), copy.deepcopy(self.projector))
        target.requires_grad_(False)
        # object.__setattr__ bypasses nn.Module's registration: see the module docstring.
        object.__setattr__(self, "target", target)

    # -- keep the unregistered target in step with the module ------------------------------
    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> BYOL:
        """`.to()`, `.cuda()`, `.float()`... reach the target too (it is not a submodule)."""
        super()._apply(fn, recurse)
        self.target._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> BYOL:
        """The target follows the online mode (train mode: BN on batch statistics, as in BYOL)."""
        super().train(mode)
        self.target.train(mode)
        return self

    # -- the method ------------------------------------------------------------------------
    def online(self) -> nn.Sequential:
        """The online encoder + projector, parameter-aligned with `self.target`."""
        return nn.Sequential(self.encoder, self.projector)

    def loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        z1 = self.projector(self.encoder(x1))
        z2 = self.projector(self.encoder(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            t1, t2 = self.target(x1), self.target(x2)
        return byol_loss(p1, t2) + byol_loss(p2, t1)

    def after_step(self, progress: float) -> None:
        ema_update(self.target, self.online(), ema_momentum(progress, self.ema_start))

    def extra_state(self) -> dict[str, torch.Tensor]:
        """The target's parameters and buffers (live references, like `state_dict()`)."""
        return dict(self.target.state_dict())

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.target.load_state_dict(state)
