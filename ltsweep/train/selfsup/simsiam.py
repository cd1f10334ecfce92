"""SimSiam (Chen & He, 2021) with the paper's 2-FC projection head.

Projection: Linear-BN-ReLU-Linear-BN, the last BN without affine parameters as in SimSiam's
code (the paper drops SimSiam's third FC; see SimSiamSettings); predictor:
Linear-BN-ReLU-Linear (2048-512-2048 by default); loss: symmetrised negative cosine
similarity with a stop-gradient on the target branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ltsweep.models.heads import mlp
from ltsweep.sweep.ssl_settings import SimSiamSettings
from ltsweep.train.selfsup.base import SSLMethod


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-cos(p, stopgrad(z)), averaged over the batch."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


class SimSiam(SSLMethod):
    def __init__(self, encoder: torch.nn.Module, settings: SimSiamSettings) -> None:
        super().__init__(encoder, settings)
        d = encoder.feat_dim
        self.projector = mlp(
            [d, settings.proj_hidden, settings.proj_dim],
            last_bn=True,
            last_bn_affine=settings.proj_last_bn_affine,  # reference code: affine=False
        )
        self.predictor = mlp([settings.proj_dim, settings.pred_hidden, settings.proj_dim])

    def loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        z1 = self.projector(self.encoder(x1))
        z2 = self.projector(self.encoder(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
