"""The one training loop every SSL method shares, with checkpoints that resume exactly.

The learning rate is a pure function of the global step (linear warm-up, then cosine), so
resuming needs only the step. A checkpoint holds the model, the optimiser, the method's
extra state (BYOL's target), the torch CPU / CUDA RNG states, the data-order and the
augmentation generators, the epoch and the monitor history; it is written atomically, so a
killed run resumes from the last whole checkpoint and, on the CPU, ends bit-identical to a
run that was never killed. A checkpoint written on another device type or GPU count is not
damaged: it resumes, and what random state cannot be carried over is re-seeded from the seed
and the epoch, with one log line (`ltsweep.train.resume`). A damaged `last.pt` falls back to
`prev.pt`, then to a fresh start; a kept epoch's encoder snapshot that is missing or damaged
(each has its SHA-256 beside it) is set aside and made again: from the checkpoint if it holds
that very epoch, else by training again from the start (the same seed gives the same encoder).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ltsweep.augment import Normalize, two_views
from ltsweep.data.base import ImageSet
from ltsweep.device import Speed, autocast, legacy_speed
from ltsweep.knn import knn_accuracy
from ltsweep.store.cache import (
    load_checkpoint,
    load_verified,
    save_checkpoint,
    save_verified,
    set_aside,
    verified_ok,
)
from ltsweep.train.batches import TrainImages
from ltsweep.train.inference import forward_eval
from ltsweep.train.resume import Restorer, rng_state
from ltsweep.train.selfsup.base import PretrainSettings, SSLMethod

CHECKPOINT = "last.pt"
#: the parts of the method kept at every checkpoint and kept epoch (fine-tunes start from them)
SNAPSHOT_PARTS = ("encoder", "projector")
log = logging.getLogger("ltsweep.pretrain")


def learning_rate(
    step: int, total_steps: int, warmup_steps: int, base: float, schedule: str
) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to 0 at `total_steps` (or constant)."""
    if warmup_steps and step < warmup_steps:
        return base * (step + 1) / warmup_steps
    if schedule == "constant":
        return base
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(params, settings: PretrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=settings.lr(), momentum=settings.momentum, weight_decay=settings.weight_decay
        )
    return torch.optim.Adam(params, lr=settings.lr(), weight_decay=settings.weight_decay)


@dataclass
class Batches:
    """Where pre-training reads from: the training subset, its clean labels (kNN only) and the test set."""

    train: ImageSet
    index: np.ndarray  # the long-tailed subset of `train`
    test: ImageSet
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int | None = None  # the views' side; None: the images' own


@dataclass
class PretrainState:
    epoch: int = 0
    step: int = 0
    loss_history: list[float] = field(default_factory=list)
    knn_history: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    lr: float = 0.0  # the last step's learning rate (for the curve; not checkpointed)
    scaler: dict = field(default_factory=dict)  # the fp16 loss scaler's state ({}: none)


def monitor(
    method: SSLMethod,
    data: Batches,
    normalize: Normalize,
    device: torch.device,
    settings: PretrainSettings,
    amp: Speed | bool,
) -> float:
    """kNN accuracy of the encoder's features; `amp`: a `Speed`, or the older flag."""
    bank = forward_eval(method.encoder, data.train, data.index, normalize, device, amp)
    test_index = np.arange(len(data.test))
    query = forward_eval(method.encoder, data.test, test_index, normalize, device, amp)
    bank, query = bank.to(device), query.to(device)
    bank_labels = torch.as_tensor(data.train.labels[data.index], device=device)
    query_labels = torch.as_tensor(data.test.labels, device=device)
    return knn_accuracy(
        bank,
        bank_labels,
        query,
        query_labels,
        data.num_classes,
        settings.knn_k,
        settings.knn_temperature,
    )


def _save(
    path: Path,
    method: SSLMethod,
    opt: torch.optim.Optimizer,
    state: PretrainState,
    order_gen: torch.Generator,
    aug_gen: torch.Generator,
) -> None:
    blob = {
        "model": method.state_dict(),
        "optimizer": opt.state_dict(),
        "scaler": state.scaler,
        "extra": method.extra_state(),
        "epoch": state.epoch,
        "step": state.step,
        "loss_history": state.loss_history,
        "knn_history": [list(x) for x in state.knn_history],
        "seconds": state.seconds,
        **rng_state(),  # torch CPU and CUDA RNG states
        "order_gen": order_gen.get_state(),
        "aug_gen": aug_gen.get_state(),
    }
    save_checkpoint(path, blob)


def snapshot_path(folder: Path, part: str, epoch: int) -> Path:
    return Path(folder) / f"{part}-epoch{epoch:05d}.pt"


def save_snapshot(folder: Path, method: SSLMethod, epoch: int) -> None:
    """Keep the encoder and projection head of `epoch`: fine-tunes can start from any kept epoch."""
    for part in SNAPSHOT_PARTS:
        save_verified(snapshot_path(folder, part, epoch), getattr(method, part).state_dict())


def load_snapshot(folder: Path, method: SSLMethod, epoch: int, device: torch.device) -> None:
    """Load the kept encoder and projector of `epoch` into `method` (checksums checked: a
    damaged snapshot raises `CacheError` naming it)."""
    for part in SNAPSHOT_PARTS:
        path = snapshot_path(folder, part, epoch)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no snapshot kept at pre-train epoch {epoch}")
        getattr(method, part).load_state_dict(load_verified(path, map_location=device))


def snapshot_intact(folder: Path, epoch: int) -> bool:
    """Both parts of `epoch` are there and match their checksums; a damaged one is set aside."""
    intact = True
    for part in SNAPSHOT_PARTS:
        path = snapshot_path(folder, part, epoch)
        if not path.exists():
            intact = False
        elif not verified_ok(path):
            log.warning("%s: damaged snapshot, moved to %s", path, set_aside(path))
            intact = False
    return intact


def _fresh_start(
    method: SSLMethod, opt: torch.optim.Optimizer, gens: tuple[torch.Generator, ...]
) -> Callable[[], None]:
    """A function that puts back the state `pretrain` was called with: where training restarts
    when no checkpoint can be used after one was partly applied, or a kept snapshot is lost."""
    model = copy.deepcopy(method.state_dict())
    extra = copy.deepcopy(method.extra_state())
    optim = copy.deepcopy(opt.state_dict())
    rng = torch.get_rng_state()
    gen_states = [g.get_state() for g in gens]

    def restore() -> None:
        method.load_state_dict(model)
        if extra:
            method.load_extra_state(extra)
        opt.load_state_dict(optim)
        torch.set_rng_state(rng)
        for g, st in zip(gens, gen_states, strict=True):
            g.set_state(st)

    return restore


def _apply(
    blob: dict,
    method: SSLMethod,
    opt: torch.optim.Optimizer,
    order_gen: torch.Generator,
    aug_gen: torch.Generator,
    seed: int = 0,
    where: object = "checkpoint",
) -> PretrainState:
    """Put a checkpoint's state into the model, optimiser and generators (raises if it does
    not fit: `load_checkpoint` then sets the file aside and tries the one before). Random
    state saved on another device type or GPU count fits nothing here: it is re-seeded from
    `seed` and the epoch, and one log line says so (`ltsweep.train.resume`)."""
    method.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    if blob["extra"]:
        method.load_extra_state(blob["extra"])  # type: ignore[attr-defined]
    state = PretrainState(
        epoch=int(blob["epoch"]),
        step=int(blob["step"]),
        loss_history=[float(x) for x in blob["loss_history"]],
        knn_history=[(int(e), float(a)) for e, a in blob["knn_history"]],
        seconds=float(blob["seconds"]),
        scaler=dict(blob.get("scaler") or {}),  # none in checkpoints before fp16 existed
    )
    restore = Restorer(seed, state.epoch)
    restore.generator("order_gen", order_gen, blob["order_gen"], stream=1)
    restore.generator("aug_gen", aug_gen, blob["aug_gen"], stream=2)
    restore.global_rng(blob)
    restore.report(log, where)
    return state


def _resume(
    path: Path,
    method: SSLMethod,
    opt: torch.optim.Optimizer,
    order_gen: torch.Generator,
    aug_gen: torch.Generator,
    keep_epochs: tuple[int, ...],
    seed: int = 0,
) -> PretrainState:
    """Where training starts: the newest usable checkpoint whose kept snapshots are all intact,
    else epoch 0 with the state `pretrain` was called with."""
    fresh = _fresh_start(method, opt, (order_gen, aug_gen))
    state = load_checkpoint(
        path, accept=lambda b: _apply(b, method, opt, order_gen, aug_gen, seed, path)
    )
    if state is None:
        fresh()
        return PretrainState()
    lost = [e for e in keep_epochs if e < state.epoch and not snapshot_intact(path.parent, e)]
    if lost:
        log.warning(
            "%s: the snapshot of kept pre-train epoch %d is missing or damaged; training again "
            "from epoch 0 to make it",
            path.parent,
            lost[0],
        )
        fresh()
        return PretrainState()
    if state.epoch and not snapshot_intact(path.parent, state.epoch):
        save_snapshot(path.parent, method, state.epoch)  # the checkpoint holds those weights
    return state


def pretrain(
    method: SSLMethod,
    data: Batches,
    settings: PretrainSettings,
    device: torch.device,
    checkpoint_dir: Path,
    seed: int,
    amp: bool = True,
    keep_epochs: tuple[int, ...] = (),
    on_epoch: Callable[[PretrainState], None] | None = None,
    speed: Speed | None = None,
) -> PretrainState:
    """Train `method` for settings.epochs, resuming from `checkpoint_dir/last.pt` if present.

    Snapshots of the encoder and projector are kept at every checkpoint and at `keep_epochs`.
    `speed` (precision, memory format, compile) applies to the whole step and the kNN
    monitor; without it, the older `amp` flag decides (bf16 + channels-last on CUDA only).
    """
    if speed is None:
        speed = legacy_speed(device, amp)
    speed.check_device(device)
    method.to(device)
    speed.model(method)
    loss_fn = speed.compiled(method.loss)
    opt = make_optimizer(method.param_groups(), settings)
    order_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1)
    normalize = Normalize(data.mean, data.std, device)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_dir / CHECKPOINT
    state = _resume(ckpt, method, opt, order_gen, aug_gen, keep_epochs, seed)

    # Clothing1M: views are cropped from a larger image than the test crop
    read = getattr(data.train, "view_images", data.train.images)
    images = TrainImages(data.train, data.index, device, read)  # CIFAR: kept on the GPU
    n = len(data.index)
    batch = min(settings.batch_size, n)
    steps_per_epoch = max(
        1, n // batch
    )  # drop_last: BatchNorm and the SSL losses want full batches
    total = steps_per_epoch * settings.epochs
    warmup = steps_per_epoch * settings.warmup_epochs
    scaler = speed.grad_scaler(device)  # fp16 only: bf16 and fp32 need no loss scaling
    if state.scaler:
        scaler.load_state_dict(state.scaler)
    method.train()
    while state.epoch < settings.epochs:
        t0 = time.perf_counter()
        order = images.order(torch.randperm(n, generator=order_gen))
        epoch_loss = torch.zeros((), device=device)
        for b in range(steps_per_epoch):
            then = order[(b + 1) * batch : (b + 2) * batch] if b + 1 < steps_per_epoch else None
            x = images.batch(order[b * batch : (b + 1) * batch], then)  # one copy, or none
            v1, v2 = two_views(x, settings.augment, aug_gen, out_size=data.image_size)
            v1, v2 = speed.input(normalize(v1)), speed.input(normalize(v2))
            lr = learning_rate(state.step, total, warmup, settings.lr(), settings.schedule)
            for g in opt.param_groups:  # a fixed_lr group (SimSiam's predictor) stays put
                g["lr"] = settings.lr() if g.get("fixed_lr") else lr
            state.lr = lr
            with autocast(device, speed):
                loss = loss_fn(v1, v2)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            state.step += 1
            method.after_step(state.step / total)
            epoch_loss += loss.detach().float()
        state.epoch += 1
        state.loss_history.append(float(epoch_loss) / steps_per_epoch)
        if not math.isfinite(state.loss_history[-1]):
            raise FloatingPointError(
                f"pre-train loss is {state.loss_history[-1]} at epoch {state.epoch}"
            )
        if state.epoch % settings.knn_every == 0 or state.epoch == settings.epochs:
            state.knn_history.append(
                (state.epoch, monitor(method, data, normalize, device, settings, speed))
            )
            method.train()
        state.seconds += time.perf_counter() - t0
        is_checkpoint = (
            state.epoch % settings.checkpoint_every == 0 or state.epoch == settings.epochs
        )
        if is_checkpoint or state.epoch in keep_epochs:
            save_snapshot(checkpoint_dir, method, state.epoch)
        if is_checkpoint:
            state.scaler = scaler.state_dict()
            _save(ckpt, method, opt, state, order_gen, aug_gen)
        if on_epoch is not None:
            on_epoch(state)
    return state
