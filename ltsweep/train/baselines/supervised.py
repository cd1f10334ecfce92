"""Single-stage CE, LA, SL and LA+SL: the fine-tune losses, training the whole network from scratch.

The paper's ablation of the pre-training (Fig. 4): same backbone, same losses, no SSL stage.
The loss is chosen by the same flags as the fine-tune (`ltsweep.train.finetune`): "la" adds
tau * log(prior) to the logits, prior = frequencies of the noisy training labels (all that
is observed); "+sl" / "sl" wraps the per-sample CE in SuperLoss with threshold log(C)
(or sweep.loss.sl_threshold) and lambda sweep.loss.sl_lambda. Prediction uses raw logits.

`OneNetwork` is the one-network method ELR shares: a loss callback sees the logits and the
subset positions of the batch, and may keep per-sample buffers that the checkpoint saves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ltsweep.losses import LOSSES, label_prior, superloss
from ltsweep.train.baselines.common import Outcome
from ltsweep.train.baselines.loop import LossFn, Method, Training, fit, supervised_epoch


@dataclass(frozen=True)
class LossParams:
    """Which of CE / LA / SL / LA+SL, and the constants of LA and SuperLoss."""

    loss: str  # ce | la | sl | la+sl
    la_tau: float = 1.0
    sl_lambda: float = 4.0
    sl_threshold: float = 0.0

    @property
    def uses_la(self) -> bool:
        return LOSSES[self.loss].logit_adjust

    @property
    def uses_sl(self) -> bool:
        return LOSSES[self.loss].superloss


def supervised_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    params: LossParams,
    log_prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the batch of CE, LA, SL or LA+SL (the fine-tune's per-sample loss, reduced)."""
    if params.uses_la:
        if log_prior is None:
            raise ValueError("logit adjustment needs the log prior of the training labels")
        logits = logits + params.la_tau * log_prior
    loss = F.cross_entropy(logits, labels, reduction="none")
    if params.uses_sl:
        loss = superloss(loss, params.sl_threshold, params.sl_lambda)
    return loss.mean()


class OneNetwork(Method):
    """One network trained by minibatch SGD on `loss_fn`, with per-sample `buffers`.

    The buffers (ELR's targets) are updated in place by the loss, saved with every
    checkpoint and restored in place on resume.
    """

    def __init__(self, buffers: dict[str, torch.Tensor] | None = None) -> None:
        self.buffers = buffers if buffers is not None else {}
        self.loss_fn: LossFn | None = None

    def make_loss(self, t: Training) -> LossFn:
        raise NotImplementedError

    def start(self, t: Training) -> None:
        self.loss_fn = self.make_loss(t)

    def train_epoch(self, t: Training, epoch: int) -> float:
        return supervised_epoch(t, t.nets[0], t.opts[0], self.loss_fn)

    def state(self) -> dict[str, Any]:
        return {"state": {k: v.detach().cpu() for k, v in self.buffers.items()}}

    def load_state(self, blob: dict[str, Any]) -> None:
        for k, v in blob["state"].items():
            self.buffers[k].copy_(v)


class Supervised(OneNetwork):
    def __init__(self, params: LossParams) -> None:
        super().__init__()
        self.params = params

    def make_loss(self, t: Training) -> LossFn:
        labels = t.labels
        log_prior = label_prior(t.train.labels, t.train.num_classes).log().to(t.device)
        return lambda logits, pos: supervised_loss(logits, labels[pos], self.params, log_prior)


def train_supervised(train, test, backbone, budget, params: LossParams, *rest, **opts) -> Outcome:
    """Single-stage CE / LA / SL / LA+SL from scratch on the noisy labels of `train`.

    The other arguments are `fit`'s, in its order: train (TrainSet), test, backbone, budget,
    then device, checkpoint_dir, seed, checkpoint_every, amp, on_epoch.
    """
    return fit(Supervised(params), train, test, backbone, budget, *rest, **opts)
