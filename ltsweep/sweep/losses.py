"""The loss names of a sweep file and what each is made of.

A loss is cross-entropy with two optional parts: logit adjustment (LA: the logits shifted by
tau x log(label prior), Menon et al. 2021) and SuperLoss (SL: each sample's CE re-weighted by
its confidence, Castells et al. 2020). The fine-tunes (`grid.losses`) and the supervised
baselines (`baselines.methods`) name the same four combinations, the baselines' "sl" being the
fine-tunes' "ce+sl". The trainers read the same table from `ltsweep.losses.LOSSES`;
tests/train/test_registries.py keeps the two equal. Imports nothing of torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LossSpec:
    logit_adjust: bool  # adds sweep.loss.la_tau to what a unit's key holds
    superloss: bool  # adds sweep.loss.sl_lambda and the SuperLoss threshold


#: every loss name either stage accepts
LOSSES: dict[str, LossSpec] = {
    "ce": LossSpec(logit_adjust=False, superloss=False),
    "ce+sl": LossSpec(logit_adjust=False, superloss=True),
    "sl": LossSpec(logit_adjust=False, superloss=True),
    "la": LossSpec(logit_adjust=True, superloss=False),
    "la+sl": LossSpec(logit_adjust=True, superloss=True),
}
#: the names `grid.losses` takes (the two-stage fine-tunes)
FINETUNE_LOSSES = ("ce", "ce+sl", "la", "la+sl")
#: the names of the supervised single-stage baselines (`baselines.methods`)
SUPERVISED_LOSSES = ("ce", "la", "sl", "la+sl")
