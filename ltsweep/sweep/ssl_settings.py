"""Per-method settings of self-supervised pre-training and of the fine-tuning that follows.

Defaults are the paper's values (PROTOCOL.md); every one is a named, overridable field of a
sweep file under `ssl.<method>`. Kept free of torch so that validating a sweep is instant.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ltsweep.sweep.base import Strict


class FinetuneSettings(Strict):
    """How the head is trained on the frozen encoder (PROTOCOL.md, Fine-tuning)."""

    head: Literal["linear", "mlp"] = Field(
        "mlp",
        description="linear: one FC on encoder features; mlp: first FC of the projection head + a new classifier FC",
    )
    optimizer: Literal["adam"] = "adam"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=1)
    last_layer_above: float | None = Field(
        0.6, description="noise rate above which only the last FC is trained (head: auto)"
    )
    last_layer_lr: float = Field(0.01, gt=0)


class AugmentSettings(Strict):
    """SimCLR-style two views; blur is off at 32x32 as in the paper."""

    crop_scale_min: float = Field(0.2, gt=0, le=1)
    flip_p: float = Field(0.5, ge=0, le=1)
    jitter_p: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.4, ge=0)
    hue: float = Field(0.1, ge=0, le=0.5)
    grayscale_p: float = Field(0.2, ge=0, le=1)


class SSLSettings(Strict):
    """Fields shared by every SSL method; a method's class sets its own defaults."""

    optimizer: Literal["sgd", "adam"] = "adam"
    base_lr: float = Field(gt=0, description="learning rate at batch 256 when lr_scaling is linear")
    lr_scaling: Literal["linear", "none"] = "linear"
    weight_decay: float = Field(ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    epochs: int = Field(800, ge=1)
    batch_size: int = Field(512, ge=2)
    warmup_epochs: int = Field(10, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    checkpoint_every: int = Field(50, ge=1, description="epochs between pre-train checkpoints")
    knn_every: int = Field(50, ge=1, description="epochs between kNN monitor evaluations")
    knn_k: int = Field(200, ge=1)
    knn_temperature: float = Field(0.1, gt=0)
    proj_hidden: int = Field(2048, ge=1, description="hidden width of the projection MLP")
    proj_dim: int = Field(2048, ge=1, description="output width of the projection MLP")
    augment: AugmentSettings = AugmentSettings()
    finetune: FinetuneSettings = FinetuneSettings()

    def lr(self) -> float:
        return self.base_lr * (self.batch_size / 256 if self.lr_scaling == "linear" else 1.0)


class SimSiamSettings(SSLSettings):
    optimizer: Literal["sgd", "adam"] = "sgd"
    base_lr: float = Field(0.03, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    pred_hidden: int = Field(512, ge=1)
    finetune: FinetuneSettings = FinetuneSettings(last_layer_above=0.6)


class SimCLRSettings(SSLSettings):
    base_lr: float = Field(1e-3, gt=0)
    lr_scaling: Literal["linear", "none"] = "none"
    weight_decay: float = Field(1e-6, ge=0)
    epochs: int = Field(1000, ge=1)
    warmup_epochs: int = Field(0, ge=0)
    schedule: Literal["cosine", "constant"] = "constant"
    temperature: float = Field(0.5, gt=0)
    proj_dim: int = Field(128, ge=1)
    finetune: FinetuneSettings = FinetuneSettings(
        head="linear", lr=1e-3, weight_decay=1e-6, epochs=25, last_layer_above=None
    )


class BYOLSettings(SSLSettings):
    base_lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1.5e-6, ge=0)
    proj_hidden: int = Field(4096, ge=1)
    proj_dim: int = Field(256, ge=1)
    pred_hidden: int = Field(4096, ge=1)
    ema_start: float = Field(
        0.99, ge=0, le=1, description="target momentum, raised to 1 by a cosine"
    )
    finetune: FinetuneSettings = FinetuneSettings(last_layer_above=0.4)


class BarlowTwinsSettings(SSLSettings):
    base_lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    lambda_offdiag: float = Field(0.005, ge=0)
    finetune: FinetuneSettings = FinetuneSettings(last_layer_above=0.2)


SSL_SETTINGS: dict[str, type[SSLSettings]] = {
    "simsiam": SimSiamSettings,
    "simclr": SimCLRSettings,
    "byol": BYOLSettings,
    "barlow": BarlowTwinsSettings,
}
