"""What every single-stage baseline shares: data, network, augmentation, schedule, checkpoints.

A baseline trains the sweep's backbone plus a linear classifier from scratch on the noisy
labels of one grid cell. Augmentation is the standard supervised CIFAR one (random crop
after 4-pixel zero padding, horizontal flip), batched on the device with an explicit
`torch.Generator`, like the SSL views. The learning rate is a pure function of the epoch,
so a checkpoint needs only the epoch to resume the schedule. Checkpoints are plain tensor
dicts written atomically and read with `torch.load(weights_only=True)`, as the pre-train
loop's are; on the CPU a resumed run ends bit-identical to one never interrupted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ltsweep.augment import Normalize
from ltsweep.data.base import ImageSet
from ltsweep.device import Speed, legacy_speed
from ltsweep.models.resnet import build_encoder
from ltsweep.store.cache import load_checkpoint as load_cache_checkpoint
from ltsweep.store.cache import save_checkpoint as save_cache_checkpoint
from ltsweep.train.batches import TrainImages
from ltsweep.train.resume import Restorer, rng_state

log = logging.getLogger("ltsweep.baseline")

CHECKPOINT = "last.pt"


@dataclass(frozen=True)
class Budget:
    """The training settings every baseline shares (BaselineSettings.budget())."""

    epochs: int
    batch_size: int
    optimizer: str
    momentum: float
    lr: float
    weight_decay: float
    schedule: str
    crop_padding: int
    flip_p: float

    @classmethod
    def of(cls, settings: dict[str, Any]) -> Budget:
        return cls(**{f.name: settings[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class Backbone:
    arch: str
    width: int
    stem: str


@dataclass
class TrainSet:
    """The training subset of one grid cell; every per-sample buffer is indexed by position in it."""

    pool: ImageSet  # the whole training pool
    index: np.ndarray  # (n,) positions in `images` of the long-tailed subset
    labels: np.ndarray  # (n,) noisy training labels
    clean: np.ndarray  # (n,) clean labels (DivideMix reports the precision of its clean set)
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class Outcome:
    """What a trained baseline hands back to `run_baseline`."""

    test_logits: torch.Tensor  # (M, C) float32 on the CPU
    epochs: int
    seconds: float
    loss_history: list[float]
    extra: dict[str, float]


def crop_flip(x: torch.Tensor, padding: int, flip_p: float, gen: torch.Generator) -> torch.Tensor:
    """Random crop of each image after zero padding by `padding` pixels, then a random h-flip.

    `x` is a float batch (N, C, H, W) in [0, 1] on the generator's device; the padding is
    black (torchvision's RandomCrop fill 0, applied before normalisation).
    """
    n, _, h, w = x.shape
    dev = x.device
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=dev)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, :]
        batch = torch.arange(n, device=dev)[:, None, None]
        x = padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> NCHW
    flip = (torch.rand(n, generator=gen, device=dev) < flip_p).view(n, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


class Classifier(nn.Module):
    """The sweep's encoder and a linear classifier on its pooled features."""

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.encoder = build_encoder(backbone.arch, backbone.width, backbone.stem)
        self.fc = nn.Linear(self.encoder.feat_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x))


def build_networks(
    backbone: Backbone,
    num_classes: int,
    seed: int,
    count: int,
    device: torch.device,
    speed: Speed | None = None,
) -> list[Classifier]:
    """`count` networks initialised one after the other from `seed`, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = [Classifier(backbone, num_classes) for _ in range(count)]
    speed = speed or legacy_speed(device, True)
    for net in nets:
        net.to(device)
        speed.compile_module(speed.model(net))
    return nets


def make_optimizer(net: nn.Module, budget: Budget) -> torch.optim.Optimizer:
    if budget.optimizer != "sgd":
        raise ValueError(f"unknown baseline optimizer {budget.optimizer!r}")
    return torch.optim.SGD(
        net.parameters(), lr=budget.lr, momentum=budget.momentum, weight_decay=budget.weight_decay
    )


def epoch_lr(budget: Budget, epoch: int) -> float:
    """Cosine annealing to 0 over `epochs`, stepped per epoch (torch's CosineAnnealingLR)."""
    if budget.schedule == "constant":
        return budget.lr
    return budget.lr * 0.5 * (1 + math.cos(math.pi * epoch / budget.epochs))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """One epoch's batches; a trailing batch of a single sample is dropped (BatchNorm needs two)."""
    out = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    return [b for b in out if b[1] - b[0] > 1] or out


class Views:
    """Reads training images by subset position and turns them into normalised (augmented) inputs.

    The subset's images stay on the GPU for the unit's life when they fit (`TrainImages`): a
    step then gathers its batch there from positions already on the device, copying nothing.
    """

    def __init__(
        self,
        train: TrainSet,
        budget: Budget,
        device: torch.device,
        aug_gen: torch.Generator,
        speed: Speed | None = None,
    ) -> None:
        self.train, self.budget, self.device, self.gen = train, budget, device, aug_gen
        self.speed = speed or legacy_speed(device, True)
        self.normalize = Normalize(train.mean, train.std, device)
        self.images = TrainImages(train.pool, train.index, device)

    def raw(
        self,
        positions: np.ndarray | torch.Tensor,
        on_device: torch.Tensor | None = None,
        then: np.ndarray | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The images at subset `positions` (host), as floats in [0, 1] on the device;
        `on_device`: the same positions already on the device, which images kept there use;
        `then`: the next step's (host) positions, read ahead where images are decoded."""
        use = on_device if on_device is not None and self.images.resident else positions
        return self.images.batch(use, then).float().div_(255)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        out = self.normalize(crop_flip(x, self.budget.crop_padding, self.budget.flip_p, self.gen))
        return self.speed.input(out)

    def plain(self, positions: np.ndarray) -> torch.Tensor:
        return self.normalize(self.raw(positions))


def restore_rng(blob: dict[str, Any], restore: Restorer | None = None) -> None:
    """The torch RNG states of `blob`; CUDA ones saved for another GPU count are re-seeded
    (`ltsweep.train.resume`), noted in `restore` for its one log line."""
    (restore or Restorer(0, int(blob.get("epoch", 0)))).global_rng(blob)


def save_checkpoint(path: Path, blob: dict[str, Any]) -> None:
    """Write `blob` (plain tensors, numbers, lists, dicts) atomically."""
    save_cache_checkpoint(path, blob | rng_state())  # keeps the previous one as prev.pt


def load_checkpoint(
    path: Path,
    accept: Callable[[dict[str, Any]], Any] | None = None,
    restorer: Callable[[dict[str, Any]], Restorer] | None = None,
) -> Any:
    """The newest intact checkpoint (`path`, else the `prev.pt` beside it), or None if there is
    none: a damaged file, or one `accept` (which applies it) rejects by raising, is moved
    aside and training falls back to the one before. With `accept`, returns what it returned;
    the RNG states are restored only from the checkpoint that was accepted. A checkpoint
    written on another device type or GPU count is not damaged: `restorer(blob)` (the one
    `accept` restored the generators with, for the unit's seed) re-seeds what does not fit."""

    def apply(blob: dict[str, Any]) -> Any:
        restore = restorer(blob) if restorer else Restorer(0, int(blob.get("epoch", 0)))
        out = blob if accept is None else accept(blob)
        restore_rng(blob, restore)
        restore.report(log, path)
        return out

    return load_cache_checkpoint(path, accept=apply)


def check_finite(value: float, what: str, epoch: int) -> None:
    if not math.isfinite(value):
        raise FloatingPointError(f"{what} is {value} at epoch {epoch}")
