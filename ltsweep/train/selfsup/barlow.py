"""Barlow Twins (Zbontar et al., 2021) with the paper's 2048-2048 projection head.

Projection: Linear-BN-ReLU-Linear-BN-ReLU-Linear (proj_layers 3, as the original and
solo-learn; widths proj_hidden -> proj_dim, both 2048 by default: the paper finds this better
than the original 8192s; see BarlowTwinsSettings); loss: the redundancy-reduction objective on
the cross-correlation of the batch-standardised embeddings of the two views, with
lambda_offdiag = 0.005.
"""

from __future__ import annotations

from typing import Protocol

import torch

from ltsweep.models.heads import mlp
from ltsweep.train.selfsup.base import PretrainSettings, SSLMethod


class BarlowTwinsHyper(PretrainSettings, Protocol):
    """The fields of its heads and loss (`ltsweep.sweep.ssl_settings.BarlowTwinsSettings` has them)."""

    proj_layers: int
    lambda_offdiag: float


def standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-dimension mean 0, std 1 over the batch (biased variance + eps).

    Exactly what the reference's affine-free BatchNorm1d does in train mode, so that
    C_ii = 1 when the two views agree perfectly.
    """
    z = z.float()
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def barlow_loss(z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float) -> torch.Tensor:
    """sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2, C = z1n^T z2n / N.

    The diagonal term makes the two views' embeddings agree dimension by dimension; the
    off-diagonal term decorrelates dimensions so that they do not all carry the same thing.
    """
    n = z1.shape[0]
    c = standardise(z1).T @ standardise(z2) / n
    diag = torch.diagonal(c)
    on = (1 - diag).pow(2).sum()
    off = c.pow(2).masked_fill(torch.eye(len(c), dtype=torch.bool, device=c.device), 0).sum()
    return on + lambda_offdiag * off


class BarlowTwins(SSLMethod):
    def __init__(self, encoder: torch.nn.Module, settings: BarlowTwinsHyper) -> None:
        super().__init__(encoder, settings)
        d = encoder.feat_dim
        hidden = [settings.proj_hidden] * (settings.proj_layers - 1)
        self.projector = mlp([d, *hidden, settings.proj_dim])  # 3 FC by default: the original
        self.lambda_offdiag = settings.lambda_offdiag

    def loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        z1 = self.projector(self.encoder(x1))
        z2 = self.projector(self.encoder(x2))
        return barlow_loss(z1, z2, self.lambda_offdiag)
