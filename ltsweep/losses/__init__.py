"""Losses: logit adjustment, SuperLoss and the Lambert W it needs; SSL losses live with their methods.

`LOSSES` names the combinations the trainers train (cross-entropy, with logit adjustment
and / or SuperLoss); `ltsweep.sweep.losses.LOSSES` is its twin in the sweep layer, and
tests/train/test_registries.py keeps the two equal.

May import: torch, numpy.
"""

from dataclasses import dataclass

from ltsweep.losses.lambertw import lambertw
from ltsweep.losses.logit_adjust import adjust_logits, label_prior
from ltsweep.losses.superloss import superloss, superloss_sigma


@dataclass(frozen=True)
class LossRecipe:
    logit_adjust: bool  # logits + la_tau * log(label prior) before the softmax
    superloss: bool  # the per-sample CE through SuperLoss


#: a loss name (a fine-tune's `loss`, a supervised baseline's name) -> what it is made of
LOSSES: dict[str, LossRecipe] = {
    "ce": LossRecipe(logit_adjust=False, superloss=False),
    "ce+sl": LossRecipe(logit_adjust=False, superloss=True),
    "sl": LossRecipe(logit_adjust=False, superloss=True),
    "la": LossRecipe(logit_adjust=True, superloss=False),
    "la+sl": LossRecipe(logit_adjust=True, superloss=True),
}

__all__ = [
    "LOSSES",
    "LossRecipe",
    "adjust_logits",
    "label_prior",
    "lambertw",
    "superloss",
    "superloss_sigma",
]
