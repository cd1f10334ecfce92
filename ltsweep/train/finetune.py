"""Fine-tuning heads on frozen features: many trials trained together as one stacked model.

The fine-tune trials of one pre-train differ only in their noisy labels, loss, learning rate
and seed. Trained one at a time, a trial's cost is per-step overhead (tiny matmuls, Python,
optimiser bookkeeping). Here they are one model:
- trials of one seed draw the same classifier init and batch order, so they sit side by side
  in "chunks" (`lay_out`): a chunk gathers its batch once, on the device, and every layer is
  one batched matmul over the chunks, (chunks, slots * out, D) x (chunks, D, B);
- the per-trial loss variants (logit adjustment, SuperLoss) are per-row constants and loss
  weights, not Python branches; the linear heads' gradients are written out by hand
  (`linear_grads`), the 2-FC head uses autograd;
- one optimiser step updates every trial: torch's fused Adam when the trials share lr and
  weight decay, else `StackedAdam` with per-trial values.
No Python runs per trial inside a step.

Head modes (PROTOCOL.md):
- linear: one FC on the encoder features (SimCLR protocol);
- full: the first Linear+BN+ReLU block of the pre-trained projection head, then a new FC;
  both trained;
- last: that block frozen (BN in eval mode), only the new FC trained. Its hidden activations
  are the same for every trial, so they are computed once and the trials train linear heads.

`train_reference` trains one trial with plain nn modules and torch.optim.Adam; the tests
hold the stacked trainer to it (same test predictions on >= 99 % of the test set).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ltsweep.device import to_device
from ltsweep.losses import LOSSES, label_prior, superloss, superloss_sigma
from ltsweep.store import cache
from ltsweep.train.stacked_adam import stacked_optimizer

BN_EPS = 1e-5
BN_MOMENTUM = 0.1


@functools.lru_cache(maxsize=2)
def _features_on_cpu(cache_dir: str, key: str, epoch: int) -> dict[str, Any]:
    """The features of pre-train `key` at `epoch` as stored, read (and checksum-verified) once
    per worker process: the groups of one pre-train that a worker runs one after the other
    share them. Kept in host memory: Ray reuses the process for later trials, and a cache on
    the GPU would hold part of the card across them, beyond the trial's share."""
    return cache.load_features(Path(cache_dir), key, epoch)


def stored_features(cache_dir: str, key: str, epoch: int, device: str) -> dict[str, Any]:
    """The features of pre-train `key` at `epoch`, the trained-on ones moved to `device`.

    The copy on `device` belongs to the caller (one fine-tune group) and goes with it.
    """
    raw = _features_on_cpu(cache_dir, key, epoch)
    dev = torch.device(device)
    return {
        k: to_device(v, dev) if k in ("train", "test") or k.startswith("head.") else v
        for k, v in raw.items()
    }


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


#: floats of one chunk's activations (batch x slots x layer width) that chunks are kept under:
#: beyond a few MB a wide head's activations and weight gradient fall out of the cache and
#: every trial gets slower (measured: 1.4x per trial with 40 wide trials in one product)
CHUNK_ACTIVATIONS = 2**21


#: a chunk's fixed cost, counted in slots: its own batch gather, and a thinner matmul (a chunk of
#: g slots multiplies a (g * out, D) weight block; small g wastes the GEMM's register blocking)
CHUNK_COST = 4


def chunk_size(group_sizes: list[int], most: int) -> int:
    """Slots per chunk: the g <= `most` that lays out seed groups of these sizes at least cost.

    Chunks are the batch axis of one batched matmul, so they all have g slots; a seed group of
    n trials takes ceil(n / g) chunks and its last one is padded. The cost of a layout is its
    slots (padding is wasted arithmetic) plus CHUNK_COST per chunk; ties go to the largest g.
    Seed groups of equal size (a grid of noise x loss x seed) get g = their size, no padding.
    """
    top = max(1, min(most, max(group_sizes)))

    def cost(g: int) -> tuple[int, int]:
        chunks = sum(-(-n // g) for n in group_sizes)
        return chunks * (g + CHUNK_COST), -g

    return min(range(1, top + 1), key=cost)


@dataclass(frozen=True)
class Layout:
    """Where the trials sit: chunk j, slot i is row j * slots + i of the stacked model.

    A chunk holds trials of one seed only: they share the classifier init and every batch
    (the batch order is drawn from the seed), so a chunk gathers its batch once and reads it
    with one matrix product. Rows past a seed group's trials are padding (zero loss weight).
    """

    slots: int
    seeds: list[int]  # distinct seeds, first-seen order
    chunk_seed: list[int]  # per chunk: index into `seeds`
    row_of_trial: list[int]

    @property
    def rows(self) -> int:
        return len(self.chunk_seed) * self.slots


def lay_out(trials: list[Trial], most: int) -> Layout:
    """Group the trials by seed and cut the groups into equal chunks (see `chunk_size`)."""
    by_seed: dict[int, list[int]] = {}
    for i, t in enumerate(trials):
        by_seed.setdefault(t.seed, []).append(i)
    g = chunk_size([len(m) for m in by_seed.values()], most)
    chunk_seed: list[int] = []
    row_of_trial = [0] * len(trials)
    for s, members in enumerate(by_seed.values()):
        for start in range(0, len(members), g):
            for slot, i in enumerate(members[start : start + g]):
                row_of_trial[i] = len(chunk_seed) * g + slot
            chunk_seed.append(s)
    return Layout(g, list(by_seed), chunk_seed, row_of_trial)


def _row_constants(
    trials: list[Trial], layout: Layout, num_classes: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """Per-row labels, logit shifts, loss flags, lr and wd; padding rows copy trial 0's."""
    at_row = [trials[0]] * layout.rows
    real = [0.0] * layout.rows
    for i, r in enumerate(layout.row_of_trial):
        at_row[r], real[r] = trials[i], 1.0
    sl_rows = [r for r, t in enumerate(at_row) if real[r] and LOSSES[t.loss].superloss]
    on = lambda xs: torch.tensor(xs, dtype=torch.float32, device=device)  # noqa: E731
    log_prior = torch.stack([label_prior(t.labels, num_classes) for t in at_row]).log().to(device)
    la = on([t.la_tau if LOSSES[t.loss].logit_adjust else 0.0 for t in at_row])
    return {
        "labels": torch.as_tensor(np.stack([t.labels for t in at_row]), device=device).long(),
        "la_shift": (la.view(-1, 1) * log_prior).unsqueeze(-1),  # (R, C, 1)
        "real": on(real).view(-1, 1),
        "sl_rows": torch.tensor(sl_rows, dtype=torch.long, device=device),
        "sl_tau": on([at_row[r].sl_threshold for r in sl_rows]).view(-1, 1),
        "sl_lam": on([at_row[r].sl_lambda for r in sl_rows]).view(-1, 1),
        "lr": on([t.lr for t in at_row]),
        "wd": on([t.weight_decay for t in at_row]),
    }


def loss_weights(ce: torch.Tensor, k: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample weights w (R, B) such that sum(w * ce) has the gradient of each row's loss.

    CE and LA: 1. SuperLoss: sigma*, since d/dl [(l - tau) sigma* + lam log(sigma*)^2] = sigma*
    (sigma* minimises the loss in sigma, so its own variation drops out; see losses.superloss).
    Padding rows: 0. Lambert W runs on the SuperLoss rows only.
    """
    weights = k["real"].expand_as(ce)
    if len(k["sl_rows"]):
        weights = weights.clone()
        weights[k["sl_rows"]] = superloss_sigma(ce[k["sl_rows"]], k["sl_tau"], k["sl_lam"])
    return weights


@torch.no_grad()
def linear_grads(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, k: dict[str, torch.Tensor]
) -> None:
    """Set the gradients of stacked linear heads by hand: dL/dlogits = w_i (softmax - onehot) / B.

    `x` (S, B, D) is each chunk's batch, `y` (R, 1, B) each row's labels, `w` (S, slots, C, D)
    and `b` (S, slots, C) the heads, w_i the loss weights (`loss_weights`). Autograd gives the
    same numbers with about 15 more kernels per step and its engine's bookkeeping, which is
    most of a linear head's step that is not matmul.
    """
    S, B, D = x.shape
    R, C = y.shape[0], w.shape[-2]
    logits = torch.baddbmm(b.view(S, -1, 1), w.view(S, -1, D), x.transpose(1, 2)).view(R, C, B)
    logp = torch.log_softmax(logits.add_(k["la_shift"]), dim=1)
    weights = loss_weights(-logp.gather(1, y).squeeze(1), k).div(B)
    grad = logp.exp_()  # the softmax
    grad.scatter_add_(1, y, torch.full(y.shape, -1.0, device=grad.device))
    grad.mul_(weights.unsqueeze(1))
    w.grad = torch.bmm(grad.view(S, -1, B), x).view_as(w)
    b.grad = grad.sum(-1).view_as(b)


def _stacked(x: torch.Tensor, chunks: int, slots: int, device: torch.device) -> torch.Tensor:
    """`x` copied into every (chunk, slot): each trial trains its own copy."""
    return x.to(device).expand(chunks, slots, *x.shape).clone()


@dataclass
class StackedHeads:
    """The heads of one group, stacked: parameters (S chunks, slots, ...) and BN statistics."""

    layout: Layout
    params: dict[str, torch.Tensor]  # w, b (the classifier); full: w1, b1, gamma, beta
    stats: dict[str, torch.Tensor]  # full: the BatchNorm's running mean and var
    num_classes: int
    dim: int  # the width of the features the heads read
    fan_in: int  # the classifier's input: the hidden width (full), else `dim`
    full: bool

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """Logits (R, C, B) of the chunks' batches `x` (S or 1, B, D)."""
        P, stats, fan_in, C, D = self.params, self.stats, self.fan_in, self.num_classes, self.dim
        S, g, R = len(self.layout.chunk_seed), self.layout.slots, self.layout.rows
        B = x.shape[1]
        xt = x.transpose(1, 2).expand(S, D, B)
        if self.full:
            h = torch.baddbmm(P["b1"].view(S, g * fan_in, 1), P["w1"].view(S, g * fan_in, D), xt)
            h = F.batch_norm(  # statistics over the batch: the last axis of (1, R*H, B)
                h.view(1, R * fan_in, B),
                stats["mean"].view(-1),
                stats["var"].view(-1),
                P["gamma"].view(-1),
                P["beta"].view(-1),
                training=train and B > 1,
                momentum=BN_MOMENTUM,
                eps=BN_EPS,
            )
            h = torch.relu(h).view(R, fan_in, B)
            return torch.baddbmm(P["b"].view(R, C, 1), P["w"].view(R, C, fan_in), h)
        return torch.baddbmm(P["b"].view(S, g * C, 1), P["w"].view(S, g * C, D), xt).view(R, C, B)


def _setup(
    train_x: torch.Tensor,
    num_classes: int,
    head: HeadSpec,
    trials: list[Trial],
    head_init: dict[str, torch.Tensor] | None,
) -> tuple[StackedHeads, list[torch.Generator]]:
    """The group's stacked heads, initialised, and each seed's generator after its init.

    Same draws as each trial's own generator alone: the init first, then (`_train_epoch`)
    one order per epoch.
    """
    device = train_x.device
    full = head.mode == "full"
    if full and head_init is None:
        raise ValueError("head mode 'full' needs the pre-trained projection block (head_init)")
    C, D = num_classes, train_x.shape[1]
    fan_in = head_init["w1"].shape[0] if full else D
    width = fan_in if full else C
    layout = lay_out(trials, max(1, CHUNK_ACTIVATIONS // (head.batch_size * width)))
    S, g = len(layout.chunk_seed), layout.slots

    gens = [torch.Generator().manual_seed(seed) for seed in layout.seeds]
    inits = [_init_classifier(C, fan_in, gen) for gen in gens]
    P = {
        "w": torch.stack([inits[s][0] for s in layout.chunk_seed]).to(device),
        "b": torch.stack([inits[s][1] for s in layout.chunk_seed]).to(device),
    }
    P = {name: t.unsqueeze(1).expand(S, g, *t.shape[1:]).clone() for name, t in P.items()}
    stats: dict[str, torch.Tensor] = {}
    if full:
        P |= {
            "w1": _stacked(head_init["w1"], S, g, device),
            "b1": _stacked(head_init["b1"], S, g, device),
            "gamma": _stacked(head_init["bn_weight"], S, g, device),
            "beta": _stacked(head_init["bn_bias"], S, g, device),
        }
        stats = {
            "mean": _stacked(head_init["bn_mean"], S, g, device),
            "var": _stacked(head_init["bn_var"], S, g, device),
        }
    for t in P.values():
        t.requires_grad_(True)
    return StackedHeads(layout, P, stats, C, D, fan_in, full), gens


def _train_epoch(
    heads: StackedHeads,
    train_x: torch.Tensor,
    k: dict[str, torch.Tensor],
    gens: list[torch.Generator],
    opt: torch.optim.Optimizer,
    bounds: list[tuple[int, int]],
) -> None:
    """One epoch of every trial: a fresh order per seed, one optimiser step per batch."""
    layout, n, D = heads.layout, train_x.shape[0], heads.dim
    S, g, R = len(layout.chunk_seed), layout.slots, layout.rows
    chunk_seed = torch.tensor(layout.chunk_seed, device=train_x.device)
    orders = torch.stack([torch.randperm(n, generator=gen) for gen in gens]).to(train_x.device)
    chunk_orders = orders[chunk_seed]  # (S, n)
    row_labels = k["labels"].view(S, g, n).gather(2, chunk_orders.unsqueeze(1).expand(S, g, n))
    row_labels = row_labels.view(R, n)
    for s, e in bounds:
        x = train_x.index_select(0, chunk_orders[:, s:e].reshape(-1)).view(S, e - s, D)
        y = row_labels[:, None, s:e]  # (R, 1, B)
        if heads.full:
            logp = torch.log_softmax(heads.forward(x, train=True) + k["la_shift"], dim=1)
            ce = -logp.gather(1, y).squeeze(1)  # (R, B)
            # sum over trials of each trial's batch mean: trials do not share gradients
            (ce * loss_weights(ce.detach(), k)).sum().div(e - s).backward()
        else:
            linear_grads(x, y, heads.params["w"], heads.params["b"], k)
        opt.step()
        opt.zero_grad()


@torch.no_grad()
def _predict(heads: StackedHeads, test_x: torch.Tensor) -> torch.Tensor:
    """Each trial's predicted classes of `test_x` (T, M), in chunks of the test set that keep
    the logits of all rows within 2**26 numbers."""
    width = heads.fan_in if heads.full else heads.num_classes
    chunk = max(1, int(2**26 // max(1, heads.layout.rows * max(width, heads.num_classes))))
    preds = torch.cat(
        [
            heads.forward(test_x[None, s : s + chunk], train=False)
            .max(1)
            .indices  # argmax(1): 10x slower
            for s in range(0, test_x.shape[0], chunk)
        ],
        dim=1,
    )
    return preds[torch.tensor(heads.layout.row_of_trial, device=test_x.device)]


def train_stacked(
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    num_classes: int,
    head: HeadSpec,
    trials: list[Trial],
    head_init: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Train every trial; return test predictions (T, M) as int64 on the features' device.

    `train_x` (N, D) and `test_x` (M, D) should already be on the training device. Trials are
    laid out in chunks of one seed (`lay_out`); per step, each chunk's batch is gathered once
    as (B, D) and every layer that reads it is one batched matmul over the chunks,
    (S, slots * out, D) x (S, D, B). Activations keep features before samples, (rows, C, B),
    so the products, BatchNorm and the log-softmax over C all run on contiguous memory.
    Each trial's result equals its result trained alone, up to matmul rounding.
    Set-up (`_setup`), an epoch of steps (`_train_epoch`) and the evaluation (`_predict`).
    """
    train_x, test_x = train_x.float(), test_x.float()
    if head.mode == "last":
        if head_init is None:
            raise ValueError("head mode 'last' needs the pre-trained projection block (head_init)")
        train_x, test_x = frozen_hidden(train_x, head_init), frozen_hidden(test_x, head_init)
    heads, gens = _setup(train_x, num_classes, head, trials, head_init)
    layout = heads.layout
    k = _row_constants(trials, layout, num_classes, train_x.device)
    S, g = len(layout.chunk_seed), layout.slots
    shared = {(t.lr, t.weight_decay) for t in trials}  # the usual group: one lr, one wd
    if len(shared) == 1:
        lr, wd = (float(v) for v in next(iter(shared)))
    else:
        lr, wd = k["lr"].view(S, g), k["wd"].view(S, g)
    opt = stacked_optimizer(list(heads.params.values()), lr, wd)
    bounds = _batches(train_x.shape[0], head.batch_size)
    for _ in range(head.epochs):
        _train_epoch(heads, train_x, k, gens, opt, bounds)
    return _predict(heads, test_x)


def train_reference(
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    num_classes: int,
    head: HeadSpec,
    trial: Trial,
    head_init: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """One trial the plain way (nn modules, torch.optim.Adam, a loop over batches): the yardstick."""
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
            if LOSSES[trial.loss].logit_adjust:
                logits = logits + trial.la_tau * log_prior
            loss = F.cross_entropy(logits, labels[idx], reduction="none")
            if LOSSES[trial.loss].superloss:
                loss = superloss(loss, trial.sl_threshold, trial.sl_lambda)
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return model(test_x).argmax(-1)
