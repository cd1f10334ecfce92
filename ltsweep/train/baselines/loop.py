"""The one training loop of every single-stage baseline: a method says what an epoch does.

`fit` builds the method's networks (one, or DivideMix's two) and their SGD optimisers, seeds
the data-order and augmentation generators (and any of the method's own), resumes from
`checkpoint_dir/last.pt`, sets the learning rate of each epoch, calls the method's
`train_epoch`, checks the loss is finite, checkpoints every `checkpoint_every` epochs and at
the end, and hands back the test logits the method predicts. Its arguments after the method
are the one parameter set of every baseline trainer (`train_supervised`, `train_elr`,
`train_dividemix` take their own settings, then pass the rest on).

A checkpoint holds the networks and optimisers, the generators, the epoch, the loss history,
the torch RNG states and the method's own state (ELR's targets, DivideMix's division); on
the CPU a resumed run ends bit-identical to one never interrupted. One written on another
device type or GPU count resumes too, re-seeding the random state that cannot be carried
over (`ltsweep.train.resume`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ltsweep.augment import Normalize
from ltsweep.data.base import ImageSet
from ltsweep.device import Speed, autocast, legacy_speed
from ltsweep.store.unit_progress import write_progress
from ltsweep.train.baselines.common import (
    CHECKPOINT,
    Backbone,
    Budget,
    Classifier,
    Outcome,
    TrainSet,
    Views,
    batch_bounds,
    build_networks,
    check_finite,
    epoch_lr,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
    set_lr,
)
from ltsweep.train.inference import forward_eval
from ltsweep.train.resume import Restorer

#: loss(logits (B, C) float32, positions (B,) long on the device) -> scalar
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Training:
    """What a method's epoch works with: the cell's data, the networks, the generators."""

    train: TrainSet
    nets: list[Classifier]
    opts: list[torch.optim.Optimizer]
    views: Views
    gens: dict[str, torch.Generator]  # order_gen, aug_gen and the method's own
    budget: Budget
    device: torch.device
    amp: Speed  # the step's precision and memory format (named for the older `amp` flag)
    seed: int
    #: every network's loss scaler (fp16; a pass-through otherwise), checkpointed with them
    scaler: torch.amp.GradScaler = field(
        default_factory=lambda: torch.amp.GradScaler("cpu", enabled=False)
    )

    def step(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Backward of `loss` and a step of `opt` through the loss scaler: fp16's small
        gradients are scaled up for the backward and back down before the step (a step with
        an inf/NaN gradient is skipped and the scale lowered). Clip gradients only after
        `self.scaler.unscale_(opt)`."""
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()

    @functools.cached_property
    def labels(self) -> torch.Tensor:
        """The noisy training labels on the device, by subset position."""
        return torch.as_tensor(self.train.labels, dtype=torch.long, device=self.device)

    def test_logits(self, net: Classifier, test: ImageSet) -> torch.Tensor:
        normalize = Normalize(self.train.mean, self.train.std, self.device)
        return forward_eval(
            net, test, np.arange(len(test)), normalize, self.device, self.amp, on_cpu=False
        )


class Method:
    """A baseline's part of the loop; `fit` does the rest."""

    networks = 1  # networks trained (and checkpointed) together
    what = "baseline loss"  # what a non-finite loss is called in the error

    def generators(self, seed: int) -> dict[str, torch.Generator]:
        """The method's own generators (on the CPU), checkpointed with the loop's."""
        return {}

    def start(self, t: Training) -> None:
        """Before training (and before a checkpoint is read back): build per-sample state."""

    def train_epoch(self, t: Training, epoch: int) -> float:
        """Train epoch `epoch` (0-based); return its mean loss."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """The method's state that a checkpoint keeps (plain tensors, numbers)."""
        return {}

    def load_state(self, blob: dict[str, Any]) -> None:
        """Inverse of `state`, from a checkpoint's blob."""

    def predict(self, t: Training, test: ImageSet) -> tuple[torch.Tensor, dict[str, float]]:
        """Test logits (M, C) and the method's extra result columns."""
        return t.test_logits(t.nets[0], test), {}

    def epoch_lr(self, budget: Budget, epoch: int) -> float:
        """The learning rate of `epoch`: the shared schedule unless the method has its own."""
        return epoch_lr(budget, epoch)


def supervised_epoch(
    t: Training, net: Classifier, opt: torch.optim.Optimizer, loss_fn: LossFn
) -> float:
    """One epoch of plain minibatch SGD of `net` on augmented views; the mean batch loss.

    The batch order is a fresh permutation of the subset from the loop's order generator,
    copied to the device once per epoch: a step copies its images at most.
    """
    net.train()
    n = len(t.train)
    bounds = batch_bounds(n, t.budget.batch_size)
    perm = torch.randperm(n, generator=t.gens["order_gen"])
    perm_dev = perm.to(t.device)
    total = torch.zeros((), device=t.device)
    for b, (s, e) in enumerate(bounds):
        then = perm[slice(*bounds[b + 1])] if b + 1 < len(bounds) else None
        x = t.views.augment(t.views.raw(perm[s:e], perm_dev[s:e], then))
        with autocast(t.device, t.amp):
            logits = net(x).float()
        loss = loss_fn(logits, perm_dev[s:e])
        t.step(opt, loss)
        total += loss.detach()
    return float(total) / len(bounds)


def cross_entropy(t: Training) -> LossFn:
    """CE of the noisy labels of the batch's positions."""
    labels = t.labels
    return lambda logits, pos: F.cross_entropy(logits, labels[pos])


def _networks_blob(t: Training) -> dict[str, Any]:
    # the layouts checkpoints in existing caches have: one network, or a list of them
    scaler = {"scaler": t.scaler.state_dict()}  # {} unless fp16
    if len(t.nets) == 1:
        return {"model": t.nets[0].state_dict(), "optimizer": t.opts[0].state_dict()} | scaler
    return {
        "models": [net.state_dict() for net in t.nets],
        "optimizers": [opt.state_dict() for opt in t.opts],
    } | scaler


def _load_networks(t: Training, blob: dict[str, Any]) -> None:
    models = [blob["model"]] if len(t.nets) == 1 else blob["models"]
    optims = [blob["optimizer"]] if len(t.nets) == 1 else blob["optimizers"]
    for net, opt, m, o in zip(t.nets, t.opts, models, optims, strict=True):
        net.load_state_dict(m)
        opt.load_state_dict(o)
    if blob.get("scaler"):  # none in checkpoints before fp16 existed
        t.scaler.load_state_dict(blob["scaler"])


def fit(
    method: Method,
    train: TrainSet,
    test: ImageSet,
    backbone: Backbone,
    budget: Budget,
    device: torch.device,
    checkpoint_dir: Path,
    seed: int,
    checkpoint_every: int = 10,
    amp: bool | Speed = False,
    on_epoch: Callable[[int], None] | None = None,
) -> Outcome:
    """Train `method` on `train` for budget.epochs, resuming from checkpoint_dir/last.pt.

    Networks are initialised from `seed`; the data order draws from a generator seeded with
    `seed`, the augmentation from one seeded with `seed + 1`. `on_epoch(epoch)` runs after
    each epoch's checkpoint (tests use it to interrupt a run). `amp`: a `Speed` (precision,
    memory format, compile, for every forward and backward), or the older flag (bf16 and
    channels-last on CUDA only).
    """
    speed = amp if isinstance(amp, Speed) else legacy_speed(device, amp)
    speed.check_device(device)
    nets = build_networks(backbone, train.num_classes, seed, method.networks, device, speed)
    gens = {
        "order_gen": torch.Generator().manual_seed(seed),
        "aug_gen": torch.Generator(device=device).manual_seed(seed + 1),
        **method.generators(seed),
    }
    views = Views(train, budget, device, gens["aug_gen"], speed)
    opts = [make_optimizer(net, budget) for net in nets]
    t = Training(train, nets, opts, views, gens, budget, device, speed, seed)
    t.scaler = speed.grad_scaler(device)
    method.start(t)
    ckpt = Path(checkpoint_dir) / CHECKPOINT

    restorers: list[Restorer] = []

    def restorer(blob: dict[str, Any]) -> Restorer:
        restorers.append(Restorer(seed, int(blob["epoch"])))
        return restorers[-1]

    def resume(blob: dict[str, Any]) -> tuple[int, float, list[float]]:
        _load_networks(t, blob)
        for stream, (name, gen) in enumerate(gens.items(), start=1):
            # a generator saved on another device type (aug_gen) is re-seeded, not damage
            restorers[-1].generator(name, gen, blob[name], stream)
        method.load_state(blob)
        return int(blob["epoch"]), float(blob["seconds"]), [float(x) for x in blob["history"]]

    had_checkpoint = ckpt.exists() or ckpt.with_name("prev.pt").exists()
    resumed = load_checkpoint(ckpt, accept=resume, restorer=restorer)
    if resumed is None and had_checkpoint:
        # every checkpoint was set aside, perhaps after being partly applied: start afresh
        return fit(
            method, train, test, backbone, budget, device, checkpoint_dir, seed,
            checkpoint_every, amp, on_epoch,
        )  # fmt: skip
    epoch, seconds, history = resumed or (0, 0.0, [])

    while epoch < budget.epochs:
        t0 = time.perf_counter()
        for opt in opts:
            set_lr(opt, method.epoch_lr(budget, epoch))
        history.append(method.train_epoch(t, epoch))
        epoch += 1
        check_finite(history[-1], method.what, epoch)
        seconds += time.perf_counter() - t0
        if epoch % checkpoint_every == 0 or epoch == budget.epochs:
            save_checkpoint(
                ckpt,
                _networks_blob(t)
                | {name: gen.get_state() for name, gen in gens.items()}
                | {"epoch": epoch, "seconds": seconds, "history": history}
                | method.state(),
            )
        write_progress(checkpoint_dir, epoch, budget.epochs, seconds)  # for the driver's ETA
        if on_epoch is not None:
            on_epoch(epoch)
    logits, extra = method.predict(t, test)
    return Outcome(logits.cpu(), epoch, seconds, history, extra)
