"""What an SSL method is, and the registry that builds one by name.

A method is an `nn.Module` holding the encoder and its own heads, with one job: turn two
views into a loss. Everything else (optimiser, schedule, checkpoints, augmentation, kNN
monitor) is the shared loop in `ltsweep.train.selfsup.loop`, so a method file stays short.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from ltsweep.models.heads import first_block_state
from ltsweep.sweep.ssl_settings import SSLSettings

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

    def __init__(self, encoder: nn.Module, settings: SSLSettings) -> None:
        super().__init__()
        self.encoder = encoder
        self.settings = settings

    def loss(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

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


def build_method(name: str, encoder: nn.Module, settings: SSLSettings) -> SSLMethod:
    if name not in REGISTRY:
        raise ValueError(f"unknown SSL method {name!r} (expected one of {', '.join(REGISTRY)})")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)(encoder, settings)
