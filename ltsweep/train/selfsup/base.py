"""What an SSL method is, and the registry that builds one by name.

A method is an `nn.Module` holding the encoder and its own heads, with one job: turn two
views into a loss. Everything else (optimiser, schedule, checkpoints, augmentation, kNN
monitor) is the shared loop in `ltsweep.train.selfsup.loop`, so a method file stays short.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import torch
from torch import nn

from ltsweep.augment import ViewRecipe
from ltsweep.models.heads import first_block_state


class FinetuneHead(Protocol):
    head: str  # "mlp": the feature file keeps the projection head's first block


class PretrainSettings(Protocol):
    """What the shared loop and the feature files read of a method's settings.

    Structural, so that the trainers import nothing of `ltsweep.sweep`: the sweep file's
    `ltsweep.sweep.ssl_settings.SSLSettings` (and every method's subclass) satisfies it, and so
    does any object with these fields. A method file states the fields of its own heads the same
    way (e.g. `SimSiamHyper`).
    """

    optimizer: str  # "sgd" | "adam"
    momentum: float
    weight_decay: float
    epochs: int
    batch_size: int
    warmup_epochs: int
    schedule: str  # "cosine" | "constant"
    checkpoint_every: int
    knn_every: int
    knn_k: int
    knn_temperature: float
    proj_hidden: int
    proj_dim: int
    augment: ViewRecipe  # the two views' recipe (`ltsweep.augment.two_views`)
    finetune: FinetuneHead

    def lr(self) -> float: ...


#: method name -> "module:Class", imported on first use
REGISTRY = {
    "simsiam": "ltsweep.train.selfsup.simsiam:SimSiam",
    "simclr": "ltsweep.train.selfsup.simclr:SimCLR",
    "byol": "ltsweep.train.selfsup.byol:BYOL",
    "barlow": "ltsweep.train.selfsup.barlow:BarlowTwins",
}


class SSLMethod(nn.Module):
    """Encoder + method heads. Subclasses set `self.projector` and implement `loss`."""

    projector: nn.Sequential

    def __init__(self, encoder: nn.Module, settings: PretrainSettings) -> None:
        super().__init__()
        self.encoder = encoder
        self.settings = settings

    def loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def param_groups(self) -> list[dict]:
        """The optimiser's parameter groups; a group with `fixed_lr` keeps the base learning
        rate while the loop schedules the others."""
        return [{"params": list(self.parameters()), "fixed_lr": False}]

    def after_step(self, progress: float) -> None:
        """Called after each optimiser step with progress in [0, 1] (BYOL's EMA uses it)."""

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Training state outside the optimised parameters that a checkpoint must keep."""
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `extra_state`."""

    def head_init(self) -> dict[str, torch.Tensor] | None:
        """First Linear+BN block of the projection head, the start of the fine-tune MLP head."""
        return first_block_state(self.projector)


def build_method(name: str, encoder: nn.Module, settings: PretrainSettings) -> SSLMethod:
    if name not in REGISTRY:
        raise ValueError(f"unknown SSL method {name!r} (expected one of {', '.join(REGISTRY)})")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)(encoder, settings)
