"""Fine-tuning heads on frozen features: many trials trained together as one stacked model.

The fine-tune trials of one pre-train differ only in their noisy labels, loss, learning rate
and seed. Trained one at a time, a trial's cost is per-step overhead (tiny matmuls, Python,
optimiser bookkeeping). Here T trials are one model: weights stacked as (T, out, in), a batch
is gathered on the device as (T, B, D) from per-trial index tensors, every layer is one
batched matrix product, the per-trial loss variants (logit adjustment on or off, SuperLoss on
or off) are tensor masks, and one hand-written Adam updates all trials with per-trial learning
rates and weight decays. No Python runs per trial inside a step.

Head modes (PROTOCOL.md):
- linear: one FC on the encoder features (SimCLR protocol);
- full: the first Linear+BN+ReLU block of the pre-trained projection head, then a new FC;
  both trained;
- last: that block frozen (BN in eval mode), only the new FC trained. Its hidden activations
  are the same for every trial, so they are computed once and the trials train linear heads.

`train_reference` trains one trial with plain nn modules and torch.optim.Adam; the tests
hold the stacked trainer to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ltsweep.losses import label_prior, superloss

BN_EPS = 1e-5
BN_MOMENTUM = 0.1
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class Trial:
    """What distinguishes one fine-tune trial from another of the same group."""

    labels: np.ndarray  # (N,) training labels (noisy)
    loss: str  # ce | ce+sl | la | la+sl
    lr: float
    weight_decay: float
    seed: int
    la_tau: float = 1.0
    sl_lambda: float = 4.0
    sl_threshold: float = math.log(10)


@dataclass(frozen=True)
class HeadSpec:
    """What every trial of a group shares."""

    mode: str  # linear | full | last
    epochs: int
    batch_size: int


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def _init_classifier(
    num_classes: int, fan_in: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear's default init (bound 1/sqrt(fan_in)), drawn from the trial's own generator."""
    bound = 1 / math.sqrt(fan_in)
    return _uniform((num_classes, fan_in), bound, gen), _uniform((num_classes,), bound, gen)


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Batch bounds of one epoch; a trailing batch of one sample is dropped (BatchNorm needs two)."""
    out = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    return [b for b in out if b[1] - b[0] > 1] or out


def frozen_hidden(x: torch.Tensor, head_init: dict[str, torch.Tensor]) -> torch.Tensor:
    """relu(BN_eval(x W1^T + b1)): the frozen first block of the projection head."""
    w1, b1 = head_init["w1"].to(x), head_init["b1"].to(x)
    h = F.linear(x, w1, b1)
    h = (h - head_init["bn_mean"].to(x)) / torch.sqrt(head_init["bn_var"].to(x) + BN_EPS)
    return torch.relu(h * head_init["bn_weight"].to(x) + head_init["bn_bias"].to(x))


def per_sample_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    log_prior: torch.Tensor,
    use_la: torch.Tensor,
    use_sl: torch.Tensor,
    la_tau: torch.Tensor,
    sl_tau: torch.Tensor,
    sl_lam: torch.Tensor,
) -> torch.Tensor:
    """Losses (T, B) of logits (T, B, C); per-trial flags and constants are (T, 1[, 1]) tensors."""
    adjusted = logits + (use_la * la_tau).unsqueeze(-1) * log_prior.unsqueeze(1)
    ce = -torch.log_softmax(adjusted, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return torch.where(use_sl, superloss(ce, sl_tau, sl_lam), ce)


class StackedAdam:
    """torch.optim.Adam (L2 weight decay, no amsgrad) over stacked parameters with per-trial lr/wd."""

    def __init__(
        self, params: list[torch.Tensor], lr: torch.Tensor, weight_decay: torch.Tensor
    ) -> None:
        self.params, self.lr, self.wd, self.t = params, lr, weight_decay, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = ADAM_BETAS
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            shape = (-1,) + (1,) * (p.dim() - 1)
            g = p.grad + self.wd.view(shape) * p
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(c2)).add_(ADAM_EPS)
            p.sub_(self.lr.view(shape) / c1 * m / denom)
            p.grad = None


def _trial_constants(
    trials: list[Trial], num_classes: int, device: torch.device
) -> dict[str, torch.Tensor]:
    col = lambda xs, dt=torch.float32: torch.tensor(xs, dtype=dt, device=device).view(-1, 1)  # noqa: E731
    return {
        "labels": torch.as_tensor(
            np.stack([t.labels for t in trials]), dtype=torch.long, device=device
        ),
        "log_prior": torch.stack([label_prior(t.labels, num_classes) for t in trials])
        .log()
        .to(device),
        "use_la": col([t.loss.startswith("la") for t in trials]),
        "use_sl": col([t.loss.endswith("+sl") for t in trials], torch.bool),
        "la_tau": col([t.la_tau for t in trials]),
        "sl_tau": col([t.sl_threshold for t in trials]),
        "sl_lam": col([t.sl_lambda for t in trials]),
        "lr": torch.tensor([t.lr for t in trials], device=device),
        "wd": torch.tensor([t.weight_decay for t in trials], device=device),
    }


def train_stacked(
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    num_classes: int,
    head: HeadSpec,
    trials: list[Trial],
    head_init: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Train every trial; return test predictions (T, M) as int64 on the features' device.

    `train_x` (N, D) and `test_x` (M, D) should already be on the training device.
    """
    device, n, T = train_x.device, train_x.shape[0], len(trials)
    train_x, test_x = train_x.float(), test_x.float()
    if head.mode == "last":
        if head_init is None:
            raise ValueError("head mode 'last' needs the pre-trained projection block (head_init)")
        train_x, test_x = frozen_hidden(train_x, head_init), frozen_hidden(test_x, head_init)
    full = head.mode == "full"
    if full and head_init is None:
        raise ValueError("head mode 'full' needs the pre-trained projection block (head_init)")
    fan_in = head_init["w1"].shape[0] if full else train_x.shape[1]

    gens = [torch.Generator().manual_seed(t.seed) for t in trials]
    inits = [_init_classifier(num_classes, fan_in, g) for g in gens]
    params: dict[str, torch.Tensor] = {
        "w": torch.stack([w for w, _ in inits]).to(device),
        "b": torch.stack([b for _, b in inits]).to(device),
    }
    stats: dict[str, torch.Tensor] = {}
    if full:
        rep = lambda k: head_init[k].to(device).unsqueeze(0).repeat(T, *([1] * head_init[k].dim()))  # noqa: E731
        params |= {"w1": rep("w1"), "b1": rep("b1"), "g": rep("bn_weight"), "beta": rep("bn_bias")}
        stats = {"mean": rep("bn_mean"), "var": rep("bn_var")}
    for p in params.values():
        p.requires_grad_(True)
    k = _trial_constants(trials, num_classes, device)
    opt = StackedAdam(list(params.values()), k["lr"], k["wd"])

    def forward(x: torch.Tensor, train: bool) -> torch.Tensor:
        if full:
            h = torch.baddbmm(params["b1"].unsqueeze(1), x, params["w1"].transpose(1, 2))
            if train:
                mean, var = h.mean(1, keepdim=True), h.var(1, unbiased=False, keepdim=True)
                with torch.no_grad():
                    unbiased = var * (h.shape[1] / max(1, h.shape[1] - 1))
                    stats["mean"].lerp_(mean.squeeze(1), BN_MOMENTUM)
                    stats["var"].lerp_(unbiased.squeeze(1), BN_MOMENTUM)
            else:
                mean, var = stats["mean"].unsqueeze(1), stats["var"].unsqueeze(1)
            h = (h - mean) / torch.sqrt(var + BN_EPS) * params["g"].unsqueeze(1) + params[
                "beta"
            ].unsqueeze(1)
            x = torch.relu(h)
        return torch.baddbmm(params["b"].unsqueeze(1), x, params["w"].transpose(1, 2))

    bounds = _batches(n, head.batch_size)
    for _ in range(head.epochs):
        order = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(
            device, non_blocking=True
        )
        for s, e in bounds:
            idx = order[:, s:e]
            logits = forward(train_x[idx], train=True)
            losses = per_sample_loss(
                logits,
                k["labels"].gather(1, idx),
                k["log_prior"],
                k["use_la"],
                k["use_sl"],
                k["la_tau"],
                k["sl_tau"],
                k["sl_lam"],
            )
            losses.mean(1).sum().backward()
            opt.step()

    with torch.no_grad():
        chunk = max(1, int(2**26 // max(1, T * max(fan_in, train_x.shape[1]))))
        preds = [
            forward(test_x[s : s + chunk].unsqueeze(0).expand(T, -1, -1), train=False).argmax(-1)
            for s in range(0, test_x.shape[0], chunk)
        ]
    return torch.cat(preds, dim=1)


def train_reference(
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    num_classes: int,
    head: HeadSpec,
    trial: Trial,
    head_init: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One trial the plain way (nn modules, torch.optim.Adam, a loop over batches): the yardstick."""
    from torch import nn

    train_x, test_x = train_x.float(), test_x.float()
    gen = torch.Generator().manual_seed(trial.seed)
    if head.mode == "last":
        train_x, test_x = frozen_hidden(train_x, head_init), frozen_hidden(test_x, head_init)
    fan_in = head_init["w1"].shape[0] if head.mode == "full" else train_x.shape[1]
    classifier = nn.Linear(fan_in, num_classes)
    w, b = _init_classifier(num_classes, fan_in, gen)
    with torch.no_grad():
        classifier.weight.copy_(w)
        classifier.bias.copy_(b)
    if head.mode == "full":
        first = nn.Linear(train_x.shape[1], fan_in)
        bn = nn.BatchNorm1d(fan_in, eps=BN_EPS, momentum=BN_MOMENTUM)
        with torch.no_grad():
            first.weight.copy_(head_init["w1"])
            first.bias.copy_(head_init["b1"])
            bn.weight.copy_(head_init["bn_weight"])
            bn.bias.copy_(head_init["bn_bias"])
            bn.running_mean.copy_(head_init["bn_mean"])
            bn.running_var.copy_(head_init["bn_var"])
        model = nn.Sequential(first, bn, nn.ReLU(), classifier).to(train_x.device)
    else:
        model = classifier.to(train_x.device)
    opt = torch.optim.Adam(model.parameters(), lr=trial.lr, weight_decay=trial.weight_decay)
    labels = torch.as_tensor(trial.labels, dtype=torch.long, device=train_x.device)
    log_prior = label_prior(trial.labels, num_classes).log().to(train_x.device)
    n = len(train_x)
    for _ in range(head.epochs):
        perm = torch.randperm(n, generator=gen).to(train_x.device)
        for s, e in _batches(n, head.batch_size):
            idx = perm[s:e]
            logits = model(train_x[idx])
            if trial.loss.startswith("la"):
                logits = logits + trial.la_tau * log_prior
            loss = F.cross_entropy(logits, labels[idx], reduction="none")
            if trial.loss.endswith("+sl"):
                loss = superloss(loss, trial.sl_threshold, trial.sl_lambda)
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return model(test_x).argmax(-1)
