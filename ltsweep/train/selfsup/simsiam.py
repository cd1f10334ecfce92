"""SimSiam (Chen & He, 2021) with the paper's 2-FC projection head.

Projection: Linear-BN-ReLU-Linear-BN, the last BN without affine parameters as in SimSiam's
code (the paper drops SimSiam's third FC; see SimSiamSettings); predictor:
Linear-BN-ReLU-Linear (2048-512-2048 by default); loss: symmetrised negative cosine
similarity with a stop-gradient on the target branch. The predictor's learning rate stays
fixed at the base rate while the rest follows the schedule, as in the reference
(`SimSiamSettings.predictor_lr`).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from ltsweep.models.heads import mlp
from ltsweep.train.selfsup.base import PretrainSettings, SSLMethod


class SimSiamHyper(PretrainSettings, Protocol):
    """The fields of its heads and loss (`ltsweep.sweep.ssl_settings.SimSiamSettings` has them)."""

    pred_hidden: int
    proj_last_bn_affine: bool
    predictor_lr: str  # "fixed" | "schedule"


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-cos(p, stopgrad(z)), averaged over the batch."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


class SimSiam(SSLMethod):
    def __init__(self, encoder: torch.nn.Module, settings: SimSiamHyper) -> None:
        super().__init__(encoder, settings)
        d = encoder.feat_dim
        self.projector = mlp(
            [d, settings.proj_hidden, settings.proj_dim],
            last_bn=True,
            last_bn_affine=settings.proj_last_bn_affine,  # reference code: affine=False
        )
        self.predictor = mlp([settings.proj_dim, settings.pred_hidden, settings.proj_dim])

    def param_groups(self) -> list[dict]:
        """With `predictor_lr: fixed`, the predictor in a group of its own that the schedule
        leaves at the base rate (the reference's "fix_lr" group)."""
        if self.settings.predictor_lr != "fixed":
            return super().param_groups()
        predictor = {id(p) for p in self.predictor.parameters()}
        rest = [p for p in self.parameters() if id(p) not in predictor]
        return [
            {"params": rest, "fixed_lr": False},
            {"params": list(self.predictor.parameters()), "fixed_lr": True},
        ]

    def loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        z1 = self.projector(self.encoder(x1))
        z2 = self.projector(self.encoder(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
