"""SuperLoss (Castells et al., NeurIPS 2020): a confidence-aware wrapper of any per-sample loss.

For a per-sample loss l, threshold tau and regulariser lam, the optimal confidence is
    sigma* = exp(-W0(0.5 * max((l - tau) / lam, -2/e)))
and the loss is (l - tau) * sigma* + lam * log(sigma*)^2. The paper prints the bound as 2/e;
-2/e is the right one (0.5 * -2/e = -1/e is the edge of W0's domain, where sigma* = e).
sigma* is treated as a constant for the gradient: by the envelope theorem d/dl min_sigma L
= sigma*, so autograd through W would only add cost.
"""

from __future__ import annotations

import math

import torch

from ltsweep.losses.lambertw import lambertw


def superloss_sigma(
    loss: torch.Tensor, tau: float | torch.Tensor, lam: float | torch.Tensor
) -> torch.Tensor:
    """sigma* per sample (no gradient)."""
    with torch.no_grad():
        z = 0.5 * torch.clamp((loss - tau) / lam, min=-2.0 / math.e)
        w = lambertw(z)
        # exp(-W(z)) = W(z) / z (W e^W = z), a division instead of an exp; 1 at z = 0
        return torch.where(z == 0, 1.0, w / torch.where(z == 0, 1.0, z))


def superloss(
    loss: torch.Tensor, tau: float | torch.Tensor, lam: float | torch.Tensor
) -> torch.Tensor:
    """Per-sample SuperLoss of the per-sample losses `loss` (reduce it yourself)."""
    sigma = superloss_sigma(loss, tau, lam)
    return (loss - tau) * sigma + lam * torch.log(sigma) ** 2
