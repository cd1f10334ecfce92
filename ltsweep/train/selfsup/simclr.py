"""SimCLR (Chen et al., 2020) as the paper pre-trains it on CIFAR.

Projection: Linear-BN-ReLU-Linear (proj_hidden -> proj_dim, 2048 -> 128 by default);
loss: NT-Xent with temperature 0.5 (SimCLR's CIFAR default, PROTOCOL.md) over the 2N views
of a batch, each view's positive being the other view of its image and the other 2N - 2
views its negatives.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from ltsweep.models.heads import mlp
from ltsweep.train.selfsup.base import PretrainSettings, SSLMethod


class SimCLRHyper(PretrainSettings, Protocol):
    """The fields of its heads and loss (`ltsweep.sweep.ssl_settings.SimCLRSettings` has them)."""

    temperature: float


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross-entropy of two (N, D) view embeddings, averaged over 2N.

    Row i of `z1` and row i of `z2` are the two views of image i. Every one of the 2N views
    is an anchor: its logits are the cosine similarities / temperature to the 2N - 1 other
    views (itself excluded, so it cannot be its own easiest "positive"), and the target is
    its partner view.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    self_mask, partner = _pairs(n, z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    return F.cross_entropy(logits, partner)


#: (n, device) -> (self mask, partner index), made on the device once per batch size
_PAIRS: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _pairs(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (2N, 2N) diagonal mask and each view's partner (i + N mod 2N), built on the device
    (no host-to-device copy) and kept: the loss runs every step with the same N."""
    got = _PAIRS.get((n, device))
    if got is None:
        self_mask = torch.eye(2 * n, dtype=torch.bool, device=device)
        partner = torch.arange(2 * n, device=device).roll(n)  # n..2n-1, then 0..n-1
        got = (self_mask, partner)
        if type(partner) is torch.Tensor and len(_PAIRS) < 8:  # never keep a fake tensor
            _PAIRS[(n, device)] = got
    return got


class SimCLR(SSLMethod):
    def __init__(self, encoder: torch.nn.Module, settings: SimCLRHyper) -> None:
        super().__init__(encoder, settings)
        d = encoder.feat_dim
        self.projector = mlp([d, settings.proj_hidden, settings.proj_dim])
        self.temperature = settings.temperature

    def loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        # One encoder pass over both views: BatchNorm then sees 2N images, as in SimCLR.
        z = self.projector(self.encoder(torch.cat([x1, x2])))
        z1, z2 = z.chunk(2)
        return nt_xent(z1, z2, self.temperature)
