"""Losses: logit adjustment, SuperLoss and the Lambert W it needs; SSL losses live with their methods.

May import: torch, numpy.
"""

from ltsweep.losses.lambertw import lambertw
from ltsweep.losses.logit_adjust import adjust_logits, label_prior
from ltsweep.losses.superloss import superloss, superloss_sigma

__all__ = ["adjust_logits", "label_prior", "lambertw", "superloss", "superloss_sigma"]
