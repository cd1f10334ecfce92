"""Per-method settings of self-supervised pre-training and of the fine-tuning that follows.

Defaults are the paper's values (PROTOCOL.md); every one is a named, overridable field of a
sweep file under `ssl.<method>`. `SSL_METHODS`, at the end, is the registry: per name, the
settings class and the cost model's hints (docs/extending.md adds a method). Kept free of
torch so that validating a sweep is instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

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


Probability = Annotated[float, Field(ge=0, le=1)]


class AugmentSettings(Strict):
    """SimCLR-style two views (PROTOCOL.md, Backbone and self-supervised pre-training:
    "random resized crop, horizontal flip, colour jitter, grayscale; blur off for 32x32").

    The paper says only "SimCLR-style"; each method's default is its best-known CIFAR recipe,
    solo-learn's (vturrisi/solo-learn, scripts/pretrain/cifar/<method>.yaml and
    augmentations/*.yaml), whose ResNet18 linear-probe figures are PROTOCOL.md's reference
    accuracies. These defaults are SimSiam's (`symmetric_weak.yaml`): crop scale from 0.08,
    jitter 0.4 / 0.4 / 0.4 / 0.1 with p 0.8, grayscale 0.2, no solarisation. Per method see
    SimCLRSettings, BYOLSettings, BarlowTwinsSettings.

    Blur: solo-learn's CIFAR recipes blur with p 0.5 (SimSiam, SimCLR) or never (BYOL,
    Barlow); PROTOCOL.md says blur off for 32x32, which wins: blur applies only to images of
    at least `blur_min_size` pixels, with `blur_p` = the method's ImageNet recipe (Clothing1M,
    224: SimSiam and SimCLR 0.5 / 0.5, BYOL and Barlow Twins 1.0 / 0.1), sigma 0.1-2.0.
    """

    crop_scale_min: float = Field(0.08, gt=0, le=1)
    flip_p: float = Field(0.5, ge=0, le=1)
    jitter_p: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.4, ge=0)
    hue: float = Field(0.1, ge=0, le=0.5)
    grayscale_p: float = Field(0.2, ge=0, le=1)
    solarize_p: tuple[Probability, Probability] = Field(
        (0.0, 0.0), description="solarisation probability of the first and the second view"
    )
    blur_p: tuple[Probability, Probability] = Field(
        (0.5, 0.5),
        description="Gaussian blur probability of the first and the second view, for images "
        "of at least blur_min_size pixels",
    )
    blur_min_size: int = Field(
        64, ge=1, description="no blur below this image side (PROTOCOL.md: off at 32x32)"
    )
    blur_sigma: tuple[float, float] = Field((0.1, 2.0), description="sigma range, in pixels")

    def blur_p_at(self, size: int) -> tuple[float, float]:
        """The views' blur probabilities for images of side `size`."""
        return self.blur_p if size >= self.blur_min_size else (0.0, 0.0)


#: solo-learn's CIFAR augmentations/asymmetric.yaml (BYOL, Barlow Twins): saturation 0.2,
#: solarisation 0 / 0.2; their ImageNet recipes blur 1.0 / 0.1
ASYMMETRIC = AugmentSettings(saturation=0.2, solarize_p=(0.0, 0.2), blur_p=(1.0, 0.1))
#: solo-learn's CIFAR augmentations/symmetric.yaml (SimCLR): jitter strength 1 x (0.8, 0.8,
#: 0.8, 0.2) with p 0.8, i.e. brightness / contrast / saturation 0.8, hue 0.2
SIMCLR_AUGMENT = AugmentSettings(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)


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

    def projector_dims(self, feat_dim: int) -> list[int]:
        """Widths of the projection MLP's Linear layers, encoder features first (2 FC)."""
        return [feat_dim, self.proj_hidden, self.proj_dim]


class SimSiamSettings(SSLSettings):
    """SimSiam with the paper's 2-FC projection (PROTOCOL.md: "projection with 2 FC layers").

    `proj_last_bn_affine`: the projection ends in a BatchNorm WITHOUT affine parameters, as in
    SimSiam's reference code (facebookresearch/simsiam, builder.py: BatchNorm1d(dim,
    affine=False)), solo-learn (solo/methods/simsiam.py) and lightly. The paper gives only the
    widths and the number of FC layers, so the layer types follow the reference code.
    """

    optimizer: Literal["sgd", "adam"] = "sgd"
    base_lr: float = Field(0.03, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    pred_hidden: int = Field(512, ge=1)
    proj_last_bn_affine: bool = Field(
        False, description="affine output BatchNorm of the projection (reference: no)"
    )
    predictor_lr: Literal["fixed", "schedule"] = Field(
        "fixed",
        description="fixed: the predictor keeps the base learning rate throughout, as the "
        "reference (facebookresearch/simsiam, --fix-pred-lr) and solo-learn (static_lr) "
        "train it; schedule: warm-up and cosine decay like the encoder",
    )
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
    augment: AugmentSettings = SIMCLR_AUGMENT
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
    augment: AugmentSettings = ASYMMETRIC
    finetune: FinetuneSettings = FinetuneSettings(last_layer_above=0.4)


class BarlowTwinsSettings(SSLSettings):
    """Barlow Twins with the paper's 2048-wide projection (PROTOCOL.md: "projection hidden and
    output 2048").

    `proj_layers`: 3 FC layers (Linear-BN-ReLU, Linear-BN-ReLU, Linear), as in the original
    (facebookresearch/barlowtwins: 8192-8192-8192) and solo-learn (solo/methods/
    barlow_twins.py, CIFAR: 2048-2048-2048). The paper changes only the widths ("the size of
    the projection head's hidden and output layers"); where it drops a layer it says so
    (SimSiam's "2 FC" instead of 3), and it says nothing of the kind for Barlow Twins.
    """

    base_lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    lambda_offdiag: float = Field(0.005, ge=0)
    proj_layers: int = Field(3, ge=2, description="FC layers of the projection (original: 3)")
    augment: AugmentSettings = ASYMMETRIC
    finetune: FinetuneSettings = FinetuneSettings(last_layer_above=0.2)

    def projector_dims(self, feat_dim: int) -> list[int]:
        return [feat_dim, *[self.proj_hidden] * (self.proj_layers - 1), self.proj_dim]


@dataclass(frozen=True)
class SSLMethodSpec:
    """An SSL method as the sweep, plan and estimate layers know it, without torch.

    Its trainer (the `nn.Module` with its heads and loss) is registered under the same name in
    `ltsweep.train.selfsup.base.REGISTRY`; tests/train/test_registries.py keeps the two in step
    and checks these hints against the modules the trainer builds.
    """

    settings: type[SSLSettings]  # the `ssl.<name>` block of a sweep file
    #: cost hints of `ltsweep.sweep.estimate` (the projector's widths: `projector_dims`)
    predictor: bool = False  # a predictor MLP proj_dim -> pred_hidden -> proj_dim, trained
    target: bool = False  # a momentum copy of encoder + projector, forwarded without backward


#: every SSL method by the name a sweep file gives it (`ssl.methods`)
SSL_METHODS: dict[str, SSLMethodSpec] = {
    "simsiam": SSLMethodSpec(SimSiamSettings, predictor=True),
    "simclr": SSLMethodSpec(SimCLRSettings),
    "byol": SSLMethodSpec(BYOLSettings, predictor=True, target=True),
    "barlow": SSLMethodSpec(BarlowTwinsSettings),
}
#: the settings class of each method (what validating a sweep file needs)
SSL_SETTINGS: dict[str, type[SSLSettings]] = {k: v.settings for k, v in SSL_METHODS.items()}
