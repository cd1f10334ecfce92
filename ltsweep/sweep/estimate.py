"""A rough GPU-hours estimate of a plan, from FLOP counts: the `estimate:` line of `ltsweep plan`.

What is counted, per unit of work:
- the ResNet18 forward, by counting its convolutions layer by layer (`resnet18_macs`; the
  network is `ltsweep.models.resnet.ResNet18`, tested against torch's FlopCounterMode), plus
  the Linear layers of the heads. One multiply-add is 2 FLOPs; BatchNorm, ReLU, pooling and
  the losses are not counted. CIFAR stem at 32x32, width 64: 0.56 G multiply-adds (the
  "0.56 GFLOPs" usually quoted), 1.11 GFLOP; ImageNet stem at 224: 1.82 G, 3.64 GFLOP;
- training = 3 x the forward (forward + backward); the SSL methods see two views of every
  image, and BYOL adds the target's forward of both (no backward);
- pre-train: epochs x the long-tailed subset, plus the kNN monitor and the feature
  extraction (a forward of the subset and the test set each); a half-done pre-train counts
  whole;
- single-stage baselines: epochs x the subset, plus the test-set forward. ELR+: two networks,
  each a training step and a forward of the other's weight average per sample. DivideMix: two
  networks; after the warm-up, every epoch a forward of the subset per network (the GMM's
  losses) and, per labelled sample and network, 2 forwards of its views (label refinement),
  4 of an unlabelled pair (co-guessing) and a training step on 4 mixed images. The labelled
  fraction is taken as 1 - the flip rate (symmetric noise's, or the cifar-n label file's
  measured rate);
- fine-tunes: the head on stored features (tiny).
Divided by an assumed sustained rate `execution.gpu_tflops` (default 25 TFLOP/s, a
conservative bf16 rate of an A100-class GPU on ResNet18: an ASSUMPTION, not a measurement;
small 32x32 images keep real GPUs far below their peak).

Units that share a GPU (a fraction in `resources.<kind>.gpu`) each run at their share of that
rate, so the GPU hours of the work do not change with the share; what changes is how many run
at once, which the line states for baselines (`resources.baseline.gpu`: 0.5 runs two per
GPU). Sharing pays off exactly where one batch-128 baseline leaves the GPU partly idle, which
a sustained-rate model does not see: the hours stay an upper bound there.

Training-set sizes come from the data set's per-class pool and the long-tail profile of
`ltsweep.data.long_tail_counts` (re-stated here: importing `ltsweep.data` imports torch).
Clothing1M's is approximate (1,000,000 / 14 per class). Imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ltsweep.sweep.baseline_settings import BASELINE_METHODS, TrainingCost
from ltsweep.sweep.schema import DataSettings, Sweep
from ltsweep.sweep.ssl_settings import SSL_METHODS

#: scikit-learn's digits: the smallest class (8) has 174 images, before the test split
DIGITS_SMALLEST_CLASS = 174
#: images per class of the (balanced) training pool; clothing1m: approximate
POOL_PER_CLASS = {"cifar10": 5000, "cifar100": 500, "clothing1m": 1_000_000 // 14}
TEST_SIZE = {"cifar10": 10_000, "cifar100": 10_000, "clothing1m": 10_526}
#: the stages of BasicBlocks of ResNet18: (blocks, stride of the first), channels width * 2**i
_STAGES = ((2, 1), (2, 2), (2, 2), (2, 2))


def _conv(cin: int, cout: int, k: int, stride: int, pad: int, size: int) -> tuple[int, int]:
    """(multiply-adds, output size) of a bias-free k x k conv on a size x size input."""
    out = (size + 2 * pad - k) // stride + 1
    return cin * cout * k * k * out * out, out


def resnet18_macs(width: int = 64, image_size: int = 32, stem: str = "cifar") -> int:
    """Multiply-adds of one image through ResNet18's convolutions (the encoder, no FC)."""
    if stem == "cifar":
        total, size = _conv(3, width, 3, 1, 1, image_size)
    elif stem == "imagenet":
        total, size = _conv(3, width, 7, 2, 3, image_size)
        size = (size + 2 - 3) // 2 + 1  # max-pool 3x3, stride 2, padding 1
    else:
        raise ValueError(f"unknown stem {stem!r}")
    cin = width
    for i, (blocks, stride) in enumerate(_STAGES):
        cout = width * 2**i
        for b in range(blocks):
            s = stride if b == 0 else 1
            m1, out = _conv(cin, cout, 3, s, 1, size)
            m2, _ = _conv(cout, cout, 3, 1, 1, out)
            total += m1 + m2
            if s != 1 or cin != cout:
                total += _conv(cin, cout, 1, s, 0, size)[0]  # the projection shortcut
            cin, size = cout, out
    return total


def mlp_macs(dims: list[int]) -> int:
    """Multiply-adds of the Linear layers of an MLP with these layer sizes."""
    return sum(a * b for a, b in zip(dims, dims[1:], strict=False))


def subset_size(n_max: int, num_classes: int, gamma: float) -> int:
    """Samples of the long-tailed subset (the sum of `ltsweep.data.long_tail_counts`)."""
    if num_classes < 2:
        return n_max * num_classes
    return sum(
        int(math.floor(n_max * gamma ** (-c / (num_classes - 1)) + 1e-9))
        for c in range(num_classes)
    )


def pool_per_class(data: DataSettings) -> int:
    if data.dataset == "digits":
        return DIGITS_SMALLEST_CLASS - data.test_per_class
    return POOL_PER_CLASS[data.dataset]


def test_size(data: DataSettings) -> int:
    if data.dataset == "digits":
        return 10 * data.test_per_class
    return TEST_SIZE[data.dataset]


def geometry(data: DataSettings) -> tuple[int, str]:
    """(image size, stem) the backbone sees: CIFAR is read at 32x32 whatever image_size says."""
    if data.dataset in ("cifar10", "cifar100"):
        return 32, "cifar"
    return int(data.image_size or 32), "imagenet" if data.dataset == "clothing1m" else "cifar"


@dataclass(frozen=True)
class Costs:
    """FLOPs per image of the sweep's networks (forward passes)."""

    encoder: int  # ResNet18 forward
    feat_dim: int
    num_classes: int
    n_test: int

    @classmethod
    def of(cls, sweep: Sweep) -> Costs:
        size, stem = geometry(sweep.data)
        width = sweep.backbone.width
        return cls(
            2 * resnet18_macs(width, size, stem),
            8 * width,
            sweep.num_classes,
            test_size(sweep.data),
        )


def ssl_flops(method: str, settings: Any, costs: Costs) -> tuple[int, int]:
    """(FLOPs of the trained forwards, of the forwards without backward) per image, both views,
    from the method's cost hints (`ssl_settings.SSL_METHODS`) and its projector's widths."""
    spec = SSL_METHODS[method]
    projector = 2 * mlp_macs(settings.projector_dims(costs.feat_dim))
    predictor = 0
    if spec.predictor:
        predictor = 2 * mlp_macs([settings.proj_dim, settings.pred_hidden, settings.proj_dim])
    trained = 2 * (costs.encoder + projector + predictor)
    target = 2 * (costs.encoder + projector) if spec.target else 0
    return trained, target


def pretrain_flops(sweep: Sweep, unit: Any) -> float:
    settings = sweep.ssl_settings(unit.method)
    costs = Costs.of(sweep)
    n = subset_size(pool_per_class(sweep.data), costs.num_classes, unit.gamma)
    trained, target = ssl_flops(unit.method, settings, costs)
    epochs = unit.epochs
    monitors = epochs // settings.knn_every + (epochs % settings.knn_every != 0)
    passes = monitors + len(unit.feature_epochs)  # forwards of the subset and the test set
    return epochs * n * (3 * trained + target) + passes * (n + costs.n_test) * costs.encoder


def finetune_flops(sweep: Sweep, unit: Any) -> float:
    costs = Costs.of(sweep)
    n = subset_size(pool_per_class(sweep.data), costs.num_classes, unit.gamma)
    d, c = costs.feat_dim, costs.num_classes
    if unit.head_kind == "linear":
        frozen, trained = 0, 2 * d * c
    else:
        hidden = sweep.ssl_settings(unit.method).proj_hidden
        if unit.head == "last":  # the frozen block is computed once, only the FC trains
            frozen, trained = 2 * d * hidden, 2 * hidden * c
        else:
            frozen, trained = 0, 2 * (d * hidden + hidden * c)
    return frozen * (n + costs.n_test) + unit.epochs * n * 3 * trained + costs.n_test * trained


def finetune_bytes(sweep: Sweep, unit: Any) -> int:
    """Bytes one fine-tune trial adds to a stacked group (`ltsweep.train.finetune.train_stacked`).

    float32 trained weights x 4 (weight, gradient, Adam's two moments), one batch's
    activations (a full head's hidden layer: its pre-BN, post-BN and post-ReLU values and their
    gradients, ~6 copies; logits and their gradient, ~4), and two int64 label rows of the
    training set. What the trials share (the features) and the test-time chunks (bounded per
    group) are not per trial. Checked against the measured peak in tests/train/test_stacked_finetune.py.
    """
    costs = Costs.of(sweep)
    n = subset_size(pool_per_class(sweep.data), costs.num_classes, unit.gamma)
    d, c, b = costs.feat_dim, costs.num_classes, unit.batch_size
    hidden = 0 if unit.head_kind == "linear" else sweep.ssl_settings(unit.method).proj_hidden
    if unit.head == "full":
        params = hidden * d + 5 * hidden + c * hidden + c  # w1, b1, BN (2 + 2 stats), FC
        acts = b * (6 * hidden + 4 * c)
    else:  # linear on the features, or on the frozen block's hidden layer
        fan_in = hidden or d
        params, acts = c * fan_in + c, 4 * b * c
    return 4 * (4 * params + acts) + 2 * 8 * n


def features_bytes(sweep: Sweep, unit: Any) -> int:
    """Bytes of GPU memory a fine-tune group's shared inputs take: its pre-train's features.

    The training and test features as stored (`execution.feature_dtype`) and as the float32
    copy the trainer makes of them (the same tensors when stored as float32), plus, for the
    `last` head, the frozen block's hidden activations of both sets, computed once.
    """
    costs = Costs.of(sweep)
    rows = subset_size(pool_per_class(sweep.data), costs.num_classes, unit.gamma) + costs.n_test
    stored = 2 if sweep.execution.feature_dtype == "float16" else 4
    out = rows * costs.feat_dim * (stored + (4 if stored != 4 else 0))
    if unit.head == "last":
        out += rows * sweep.ssl_settings(unit.method).proj_hidden * 4
    return out


def finetune_group_bytes(sweep: Sweep, units: list[Any]) -> int:
    """Bytes of GPU memory one stacked fine-tune group takes: its trials and their features."""
    return sum(finetune_bytes(sweep, u) for u in units) + features_bytes(sweep, units[0])


def baseline_flops(sweep: Sweep, unit: Any) -> float:
    """Training FLOPs from the method's cost hints (`baseline_settings.BASELINE_METHODS`): its
    networks, each a training step and `extra_forwards` forwards per sample, or its own cost
    model; plus every network's forward of the test set."""
    costs = Costs.of(sweep)
    c = costs.num_classes
    n = subset_size(pool_per_class(sweep.data), c, unit.gamma)
    f = costs.encoder + 2 * costs.feat_dim * c  # the classifier's forward
    spec = BASELINE_METHODS[unit.method]
    test = spec.networks * costs.n_test * f
    if spec.training_flops is None:
        return unit.epochs * spec.networks * n * (3 + spec.extra_forwards) * f + test
    if unit.noise_type == "symmetric":
        flip = unit.noise * (c - 1) / c
    else:  # cifar-n: the label file's measured rate (units.base.label_file)
        flip = float((unit.label_file or {}).get("noise_rate", 0.0))
    cost = TrainingCost(unit.epochs, n, 1 - flip, f, unit.settings["params"])
    return spec.training_flops(cost) + test


@dataclass(frozen=True)
class Estimate:
    pretrain: float  # FLOPs
    baselines: float
    finetune: float
    gpu_tflops: float
    approximate_size: bool = False
    #: GPUs one baseline run holds (`resources.baseline.gpu`): below 1, several share a GPU
    baseline_gpu: float = 1.0

    def hours(self, flops: float) -> float:
        return flops / (self.gpu_tflops * 1e12) / 3600

    @property
    def total_hours(self) -> float:
        return self.hours(self.pretrain + self.baselines + self.finetune)

    @property
    def baselines_per_gpu(self) -> int:
        """How many baseline runs share one GPU at once (1 with a whole GPU or more each)."""
        if not 0 < self.baseline_gpu < 1:
            return 1
        return int(1 / self.baseline_gpu + 1e-9)

    def line(self) -> str:
        h = self.hours
        shared = self.baselines_per_gpu
        per_gpu = f", {shared} per GPU (resources.baseline.gpu)" if shared > 1 else ""
        out = (
            f"  estimate: {_fmt(self.total_hours)} GPU hours (pre-train {_fmt(h(self.pretrain))}, "
            f"baselines {_fmt(h(self.baselines))}{per_gpu}, fine-tune {_fmt(h(self.finetune))}) "
            f"at {self.gpu_tflops:g} TFLOP/s sustained (execution.gpu_tflops)"
        )
        if self.approximate_size:
            out += "; Clothing1M's training set taken as 1M / 14 per class (approximate)"
        return out


def _fmt(hours: float) -> str:
    if hours >= 10:
        return f"{hours:,.0f}"
    if hours >= 0.1:
        return f"{hours:.1f}"
    if hours >= 0.001:
        return f"{hours:.2g}"
    return "0" if hours == 0 else "<0.001"


def estimate(
    sweep: Sweep, pretrains: Iterable[Any], finetunes: Iterable[Any], baselines: Iterable[Any] = ()
) -> Estimate:
    """FLOPs of these units (normally what is still to run) and the GPU hours they take."""
    return Estimate(
        pretrain=sum(pretrain_flops(sweep, u) for u in pretrains),
        baselines=sum(baseline_flops(sweep, u) for u in baselines),
        finetune=sum(finetune_flops(sweep, u) for u in finetunes),
        gpu_tflops=sweep.execution.gpu_tflops,
        approximate_size=sweep.data.dataset == "clothing1m",
        baseline_gpu=sweep.resources.baseline.gpu,
    )
