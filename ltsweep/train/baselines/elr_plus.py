"""ELR+ (Liu et al., NeurIPS 2020, Sec. 4) [shengliu66/ELR, ELR_plus/: trainer/trainer.py,
model/loss.py, base/base_trainer.py, utils/util.py], sized to the subset.

The variant the paper compares with (PROTOCOL.md, Baselines; the paper's Section 3: "network
ensembling, weight averaging and mix-up"). Two networks, each with a weight-averaged copy
(EMA, a "mean teacher"). Every epoch trains net 1 for a full pass over the subset, then
net 2, each with its own data order. Per batch of net i:
1. mixup: lambda ~ Beta(alpha, alpha), lambda' = max(lambda, 1 - lambda), inputs and one-hot
   labels mixed with a random permutation of the batch;
2. targets: the OTHER network's EMA predicts the unmixed (augmented) batch; the sample's
   target row t_j <- beta t_j + (1 - beta) softmax (renormalised), and the batch's target
   q = lambda' t + (1 - lambda') t[perm] (mixed like the inputs);
3. loss: CE(mixed logits, mixed labels) + ramp(step) * lambda * mean log(1 - <q, p>), p the
   softmax clamped to [1e-4, 1 - 1e-4]; with `label_times_target` (the reference's CIFAR-100
   branch) the CE's label is the mixed label times q, renormalised;
4. after the SGD step, net i's EMA: w_ema <- a w_ema + (1 - a) w, a = sigmoid_rampup(step + 1,
   ema_rampup_steps) * ema_alpha (or min(1 - 1 / (step + 1), ema_alpha) with no ramp-up).
Both ramps (ema_step, coef_step: 40,000 steps) are the reference's, tuned for its 391 batches
per epoch: each is stretched to the subset's batches per epoch (`ramp_length`), so it ends
at the reference's epoch 102.3 and the EMA momentum is 0.997 by the last epoch on every
long-tailed subset (counted in raw steps, CIFAR-10 gamma 100 would end at 0.27).
The step counter is the same for both networks (the reference's `global_step + local_step`):
epoch * batches per epoch + batch + 1. Test prediction: the mean of both networks' logits
(the reference's single-GPU `_test_epoch`, `0.5 * (output1 + output2)`).

Choices where the reference is tied to its set-up:
- the EMA starts as a copy of its network (the reference initialises it independently; the
  first update's momentum, sigmoid_rampup(2, 40000) * 0.997 = 0.007, erases either start);
- the EMA averages parameters only, as the reference's `update_ema_variables`; its
  BatchNorm runs in train mode (batch statistics) as the reference's does;
- no warm-up (the reference configs set warmup 0); the learning rate follows `lr_decay_at`
  (the reference's MultiStepLR milestone as a fraction of the epochs) or the shared schedule.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ltsweep.data.base import ImageSet
from ltsweep.device import autocast
from ltsweep.train.baselines.common import Budget, Outcome, batch_bounds
from ltsweep.train.baselines.dividemix import mix_lambda, mixmatch
from ltsweep.train.baselines.elr import CLAMP
from ltsweep.train.baselines.loop import Method, Training, fit


@dataclass(frozen=True)
class ELRPlusParams:
    """ELR+'s settings resolved for one data set (BaselineSettings.elr_plus)."""

    beta: float = 0.7
    lam: float = 3.0
    mixup_alpha: float = 1.0
    ema_alpha: float = 0.997
    ema_rampup_steps: int = 40000
    coef_rampup_steps: int = 0
    label_times_target: bool = False
    lr_decay_at: float | None = 0.75
    ramp_steps_per_epoch: int = 391  # the reference's batches per epoch (50,000 / 128)


# --- the pieces, each testable by hand ---------------------------------------------------


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - clip(current, 0, length) / length)^2); 1 when length is 0 (utils/util.py)."""
    if length == 0:
        return 1.0
    phase = 1.0 - float(np.clip(current, 0.0, length)) / length
    return float(math.exp(-5.0 * phase * phase))


def ramp_length(reference_steps: int, params: ELRPlusParams, steps_per_epoch: int | None) -> float:
    """A ramp of `reference_steps` of the reference's steps in this subset's steps: it ends at
    the same epoch (40,000 / 391 = 102.3) however many batches a long-tailed subset has.
    `steps_per_epoch` None: the reference's own (no stretch)."""
    if steps_per_epoch is None:
        return float(reference_steps)
    return reference_steps * steps_per_epoch / params.ramp_steps_per_epoch


def ema_momentum(step: int, params: ELRPlusParams, steps_per_epoch: int | None = None) -> float:
    """The reference's `update_ema_variables` momentum after optimiser step `step` (1-based),
    its ramp stretched to `steps_per_epoch` (see `ramp_length`)."""
    if params.ema_rampup_steps > 0:
        length = ramp_length(params.ema_rampup_steps, params, steps_per_epoch)
        return sigmoid_rampup(step + 1, length) * params.ema_alpha
    return min(1 - 1 / (step + 1), params.ema_alpha)


@torch.no_grad()
def update_history(
    hist: torch.Tensor, positions: torch.Tensor, teacher_logits: torch.Tensor, beta: float
) -> None:
    """t_j <- beta t_j + (1 - beta) softmax / sum(softmax) for the batch's samples, in place."""
    p = torch.softmax(teacher_logits.float(), dim=1)
    hist[positions] = beta * hist[positions] + (1 - beta) * p / p.sum(dim=1, keepdim=True)


def elr_plus_loss(
    logits: torch.Tensor,
    mixed_labels: torch.Tensor,
    q: torch.Tensor,
    weight: float,
    label_times_target: bool,
) -> torch.Tensor:
    """Soft-label CE + weight * mean log(1 - <q, clamp(softmax)>): `elr_plus_loss.forward`.

    `weight` is sigmoid_rampup(step, coef_rampup_steps) * lambda; `q` is detached.
    """
    y = mixed_labels
    if label_times_target:
        y = y * q
        y = y / y.sum(dim=1, keepdim=True)
    ce = torch.mean(-torch.sum(y * F.log_softmax(logits, dim=1), dim=-1))
    p = torch.clamp(F.softmax(logits, dim=1), CLAMP, 1.0 - CLAMP)
    reg = torch.log(1 - (q * p).sum(dim=1)).mean()
    return ce + weight * reg


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, momentum: float) -> None:
    """w_ema <- m w_ema + (1 - m) w over the parameters (not the BatchNorm buffers)."""
    for e, p in zip(ema.parameters(), net.parameters(), strict=True):
        e.mul_(momentum).add_(p.detach(), alpha=1 - momentum)


# --- training ----------------------------------------------------------------------------


class ELRPlus(Method):
    """Two networks with their EMA copies and per-network target histories.

    Checkpointed state: the EMA networks (`ema`, two state dicts) and the target histories
    (`elr_hist`, (2, n, C)).
    """

    networks = 2
    what = "ELR+ loss"

    def __init__(self, params: ELRPlusParams, state_out: dict[str, Any] | None = None) -> None:
        self.params, self.state_out = params, state_out

    def generators(self, seed: int) -> dict[str, torch.Generator]:
        return {"mix_gen": torch.Generator().manual_seed(seed + 2)}

    def start(self, t: Training) -> None:
        self.emas = [copy.deepcopy(net) for net in t.nets]
        for ema in self.emas:
            ema.train()
            for p in ema.parameters():
                p.requires_grad_(False)
            # a copy of an `nn.Module.compile`d network would call its original's forward:
            # drop the copied compiled call and compile the copy itself (when asked)
            for m in ema.modules():
                if getattr(m, "_compiled_call_impl", None) is not None:
                    m._compiled_call_impl = None
            compile_module = getattr(t.amp, "compile_module", None)
            if compile_module is not None:
                compile_module(ema)
        self.hist = torch.zeros(2, len(t.train), t.train.num_classes, device=t.device)

    def epoch_lr(self, budget: Budget, epoch: int) -> float:
        if self.params.lr_decay_at is None:
            return super().epoch_lr(budget, epoch)
        milestone = round(self.params.lr_decay_at * budget.epochs)
        return budget.lr * (0.1 if epoch >= milestone else 1.0)

    def train_epoch(self, t: Training, epoch: int) -> float:
        losses = [self._net_epoch(t, i, epoch) for i in range(2)]
        return float(np.mean(losses))

    def _net_epoch(self, t: Training, i: int, epoch: int) -> float:
        """One pass of net `i` over the subset; its targets come from the other net's EMA."""
        params, device, amp = self.params, t.device, t.amp
        net, opt, ema, teacher = t.nets[i], t.opts[i], self.emas[i], self.emas[1 - i]
        hist, mix_gen = self.hist[i], t.gens["mix_gen"]
        net.train()
        n = len(t.train)
        bounds = batch_bounds(n, t.budget.batch_size)
        perm = torch.randperm(n, generator=t.gens["order_gen"])
        # the epoch's mixup draws, in the order its steps use them, so that the order and the
        # mixes reach the device in one copy per epoch (a step copies its images at most)
        lams, mixes = [], []
        for s, e in bounds:
            if params.mixup_alpha > 0:
                lams.append(mix_lambda(params.mixup_alpha, mix_gen))
                mixes.append(torch.randperm(e - s, generator=mix_gen))
            else:
                lams.append(1.0)
                mixes.append(torch.arange(e - s))
        on_device = torch.cat([perm, *mixes]).to(device)
        perm_dev = on_device[:n]
        mixes_dev = on_device[n:].split([e - s for s, e in bounds])
        total = torch.zeros((), device=device)
        for b, (s, e) in enumerate(bounds):
            step = epoch * len(bounds) + b + 1
            pos_dev, lam, mix = perm_dev[s:e], lams[b], mixes_dev[b]
            then = perm[slice(*bounds[b + 1])] if b + 1 < len(bounds) else None
            x = t.views.augment(t.views.raw(perm[s:e], pos_dev, then))
            onehot = F.one_hot(t.labels[pos_dev], t.train.num_classes).float()
            mixed_x, mixed_y = mixmatch(x, onehot, lam, mix)
            with torch.no_grad(), autocast(device, amp):
                teacher_logits = teacher(x).float()
            update_history(hist, pos_dev, teacher_logits, params.beta)
            rows = hist[pos_dev]
            q = lam * rows + (1 - lam) * rows[mix]
            with autocast(device, amp):
                logits = net(mixed_x).float()
            coef_ramp = ramp_length(params.coef_rampup_steps, params, len(bounds))
            weight = sigmoid_rampup(step, coef_ramp) * params.lam
            loss = elr_plus_loss(logits, mixed_y, q, weight, params.label_times_target)
            t.step(opt, loss)  # through the loss scaler (fp16)
            ema_update(ema, net, ema_momentum(step, params, len(bounds)))
            total += loss.detach()
        return float(total) / len(bounds)

    def state(self) -> dict[str, Any]:
        return {
            "ema": [ema.state_dict() for ema in self.emas],
            "elr_hist": self.hist.detach().cpu(),
        }

    def load_state(self, blob: dict[str, Any]) -> None:
        for ema, sd in zip(self.emas, blob["ema"], strict=True):
            ema.load_state_dict(sd)
        self.hist.copy_(blob["elr_hist"])

    def predict(self, t: Training, test: ImageSet) -> tuple[torch.Tensor, dict[str, float]]:
        outs = [t.test_logits(net, test) for net in t.nets]
        if self.state_out is not None:
            self.state_out.update({"elr_hist": self.hist.detach().cpu()})
        return 0.5 * (outs[0] + outs[1]), {}


def train_elr_plus(
    train, test, backbone, budget, params: ELRPlusParams, *rest, state_out=None, **opts
) -> Outcome:
    """Train ELR+ for budget.epochs, resuming from checkpoint_dir/last.pt.

    The other arguments are `fit`'s, in its order (see `train_supervised`). `state_out`
    (optional) receives the target histories after training, for tests.
    """
    return fit(ELRPlus(params, state_out), train, test, backbone, budget, *rest, **opts)
