"""Logit adjustment (Menon et al., ICLR 2021) for long-tailed labels.

Training adds tau * log(prior) to the logits before the softmax, so the model learns the
balanced posterior; prediction uses the raw logits. The prior is the label frequency of the
training labels actually observed: with noisy labels, those noisy labels.
"""

from __future__ import annotations

import numpy as np
import torch


def label_prior(labels: np.ndarray | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Frequencies of `labels` over `num_classes` (float32); an absent class gets a tiny mass.

    Host labels are counted on the host (the counts go to a device once, with the rest of a
    unit's constants); device labels where they are."""
    if isinstance(labels, torch.Tensor):
        counts = torch.bincount(labels.long().flatten(), minlength=num_classes).to(torch.float64)
    else:
        flat = np.asarray(labels).astype(np.int64).ravel()
        counts = torch.from_numpy(np.bincount(flat, minlength=num_classes).astype(np.float64))
    counts = torch.clamp(counts, min=1e-3)  # log(0) would send a logit to -inf
    return (counts / counts.sum()).to(torch.float32)


def adjust_logits(
    logits: torch.Tensor, prior: torch.Tensor, tau: float | torch.Tensor = 1.0
) -> torch.Tensor:
    return logits + tau * torch.log(prior)
