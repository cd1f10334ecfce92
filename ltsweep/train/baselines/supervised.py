"""Single-stage CE, LA, SL and LA+SL: the fine-tune losses, training the whole network from scratch.

The paper's ablation of the pre-training (Fig. 4): same backbone, same losses, no SSL stage.
The loss is chosen by the same flags as the fine-tune (`ltsweep.finetune`): "la" adds
tau * log(prior) to the logits, prior = frequencies of the noisy training labels (all that
is observed); "+sl" / "sl" wraps the per-sample CE in SuperLoss with threshold log(C)
(or sweep.loss.sl_threshold) and lambda sweep.loss.sl_lambda. Prediction uses raw logits.

`train_single` is the one-network loop ELR shares: a loss callback sees the logits and the
subset positions of the batch, and may keep per-sample state that the checkpoint saves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ltsweep.augment import Normalize
from ltsweep.data.base import ImageSet
from ltsweep.device import autocast
from ltsweep.losses import label_prior, superloss
from ltsweep.train.baselines.common import (
    CHECKPOINT,
    Backbone,
    Budget,
    Outcome,
    TrainSet,
    Views,
    batch_bounds,
    build_networks,
    check_finite,
    epoch_lr,
    load_checkpoint,
    logits_of,
    make_optimizer,
    save_checkpoint,
    set_lr,
)

#: loss(logits (B, C) float32, positions (B,) long on the device) -> scalar
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossParams:
    """Which of CE / LA / SL / LA+SL, and the constants of LA and SuperLoss."""

    loss: str  # ce | la | sl | la+sl
    la_tau: float = 1.0
    sl_lambda: float = 4.0
    sl_threshold: float = 0.0

    @property
    def uses_la(self) -> bool:
        return self.loss.startswith("la")

    @property
    def uses_sl(self) -> bool:
        return self.loss in ("sl", "la+sl", "ce+sl")


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


def train_single(
    train: TrainSet,
    test: ImageSet,
    backbone: Backbone,
    budget: Budget,
    loss_fn: LossFn,
    state: dict[str, torch.Tensor],
    device: torch.device,
    checkpoint_dir: Path,
    seed: int,
    checkpoint_every: int = 10,
    amp: bool = False,
    on_epoch: Callable[[int], None] | None = None,
) -> Outcome:
    """Train one network with `loss_fn` for budget.epochs, resuming from checkpoint_dir/last.pt.

    `state` holds per-sample tensors that `loss_fn` updates in place (ELR's targets); they
    are saved with every checkpoint and restored in place on resume. `on_epoch(epoch)` runs
    after each epoch's checkpoint (tests use it to interrupt a run).
    """
    (net,) = build_networks(backbone, train.num_classes, seed, 1, device)
    opt = make_optimizer(net, budget)
    order_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1)
    ckpt = Path(checkpoint_dir) / CHECKPOINT
    epoch, seconds, history = 0, 0.0, []
    blob = load_checkpoint(ckpt)
    if blob is not None:
        net.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        for k, v in blob["state"].items():
            state[k].copy_(v)
        order_gen.set_state(blob["order_gen"])
        aug_gen.set_state(blob["aug_gen"])
        epoch, seconds, history = int(blob["epoch"]), float(blob["seconds"]), list(blob["history"])

    views = Views(train, budget, device, aug_gen)
    n = len(train)
    bounds = batch_bounds(n, budget.batch_size)
    net.train()
    while epoch < budget.epochs:
        t0 = time.perf_counter()
        set_lr(opt, epoch_lr(budget, epoch))
        perm = torch.randperm(n, generator=order_gen)
        total = torch.zeros((), device=device)
        for s, e in bounds:
            pos = perm[s:e]
            x = views.augment(views.raw(pos.numpy()))
            with autocast(device, amp):
                logits = net(x).float()
            loss = loss_fn(logits, pos.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
        epoch += 1
        history.append(float(total) / len(bounds))
        check_finite(history[-1], "baseline loss", epoch)
        seconds += time.perf_counter() - t0
        if epoch % checkpoint_every == 0 or epoch == budget.epochs:
            save_checkpoint(
                ckpt,
                {
                    "model": net.state_dict(),
                    "optimizer": opt.state_dict(),
                    "state": {k: v.detach().cpu() for k, v in state.items()},
                    "epoch": epoch,
                    "seconds": seconds,
                    "history": history,
                    "order_gen": order_gen.get_state(),
                    "aug_gen": aug_gen.get_state(),
                },
            )
        if on_epoch is not None:
            on_epoch(epoch)
    normalize = Normalize(train.mean, train.std, device)
    test_logits = logits_of(net, test, np.arange(len(test)), normalize, device, amp).cpu()
    return Outcome(test_logits, epoch, seconds, history, {})


def train_supervised(
    train: TrainSet,
    test: ImageSet,
    backbone: Backbone,
    budget: Budget,
    params: LossParams,
    device: torch.device,
    checkpoint_dir: Path,
    seed: int,
    checkpoint_every: int = 10,
    amp: bool = False,
    on_epoch: Callable[[int], None] | None = None,
) -> Outcome:
    """Single-stage CE / LA / SL / LA+SL from scratch on the noisy labels of `train`."""
    labels = torch.as_tensor(train.labels, dtype=torch.long, device=device)
    log_prior = label_prior(train.labels, train.num_classes).log().to(device)

    def loss_fn(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return supervised_loss(logits, labels[pos], params, log_prior)

    return train_single(
        train,
        test,
        backbone,
        budget,
        loss_fn,
        {},
        device,
        checkpoint_dir,
        seed,
        checkpoint_every,
        amp,
        on_epoch,
    )
