"""The sweep file's schema: data, backbone, grid, losses, resources, execution; its checks.

A sweep file is YAML validated by pydantic before anything runs. Errors are reported as
`grid.noise[3]: 1.2 is not in [0, 1)` (`ltsweep.sweep.base`) so a user can find the line.
The per-method blocks are `ssl_settings` and `baseline_settings`. Imports no torch: `ltsweep
plan` and `ltsweep status` must answer in a blink.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ltsweep.sweep.base import SpecError, Strict, first_error, parse, read_yaml
from ltsweep.sweep.baseline_settings import BASELINE_SETTINGS_FIELD, BaselineSettings
from ltsweep.sweep.losses import FINETUNE_LOSSES
from ltsweep.sweep.ssl_settings import SSL_SETTINGS, SSLSettings

DATASETS = ("digits", "cifar10", "cifar100", "clothing1m")
LOSSES = FINETUNE_LOSSES  # what each is made of: ltsweep.sweep.losses.LOSSES
HEADS = ("auto", "full", "last")
#: classes per data set, needed by the plan before any data is read
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "clothing1m": 14}


#: the image size a data set is read at when data.image_size is null (Clothing1M: 224 crops)
DEFAULT_IMAGE_SIZE = {"clothing1m": 224}


class NoisyLabelFile(Strict):
    """Real noisy labels (CIFAR-10N / CIFAR-100N) in the official training order."""

    path: str = Field(description="an .npz of label arrays; relative to the current directory")
    key: str = Field(description="the array to use, e.g. worse_label, aggre_label, noisy_label")
    clean_key: str = Field(
        "clean_label",
        description="the file's array of clean labels, against which its noise rate is measured",
    )
    noise_rate: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="the labels' noise rate, which stands for grid.noise where a method's "
        "settings depend on it (the fine-tune head switch, DivideMix's lambda_u, p_threshold "
        "and loss averaging); null: measured from the file (see ltsweep.units.base.label_file)",
    )

    def resolved_path(self) -> Path:
        return Path(self.path).expanduser().resolve()


class DataSettings(Strict):
    dataset: Literal["digits", "cifar10", "cifar100", "clothing1m"] = "digits"
    root: str | None = Field(None, description="data root; default: $LTSWEEP_DATA")
    image_size: int | None = Field(
        None,
        ge=8,
        description="digits: upsampled to this size; clothing1m: crop size; "
        "null: 224 for clothing1m, 32 otherwise",
    )
    test_per_class: int = Field(
        40, ge=1, description="digits only: balanced held-out test images per class"
    )
    download: bool = Field(
        False, description="CIFAR only: fetch the archive if missing (never implicit)"
    )
    noisy_labels: NoisyLabelFile | None = Field(
        None, description="real noisy labels for grid.noise_type cifar-n: {path, key}"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_image_size(cls, data: Any) -> Any:
        """Resolve a null image_size by data set, so every reader sees the size used."""
        if isinstance(data, dict) and data.get("image_size") is None:
            dataset = data.get("dataset", "digits")
            data = {**data, "image_size": DEFAULT_IMAGE_SIZE.get(dataset, 32)}
        return data

    def resolved_root(self) -> Path | None:
        root = self.root or os.environ.get("LTSWEEP_DATA")
        return Path(root).expanduser() if root else None

    def identity(self) -> dict[str, Any]:
        """What determines the data's content (not where it lives): part of every content key."""
        out: dict[str, Any] = {"dataset": self.dataset, "image_size": self.image_size}
        if self.dataset == "digits":
            out["test_per_class"] = self.test_per_class
        return out


class BackboneSettings(Strict):
    arch: Literal["resnet18"] = "resnet18"
    width: int = Field(
        64, ge=1, description="channels of the first stage; 64 is the standard ResNet18"
    )


class LossSettings(Strict):
    la_tau: float = Field(1.0, ge=0, description="logit adjustment strength (Menon et al.)")
    sl_lambda: float = Field(4.0, gt=0, description="SuperLoss regularisation lambda")
    sl_threshold: float | None = Field(None, description="SuperLoss threshold; default log(C)")


class Resources(Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0, description="a fraction shares one GPU between trials")

    @model_validator(mode="after")
    def _whole_gpus_above_one(self) -> Resources:
        """Ray shares a GPU in fractions below 1 only; above 1 it hands out whole GPUs."""
        if self.gpu > 1 and not float(self.gpu).is_integer():
            raise ValueError(
                f"gpu: {self.gpu:g} is more than one GPU but not a whole number (Ray shares a "
                "GPU only in fractions below 1)"
            )
        return self


class ResourceSettings(Strict):
    pretrain: Resources = Resources(cpu=1, gpu=1)
    finetune: Resources = Resources(cpu=1, gpu=0.25)
    baseline: Resources = Field(
        Resources(cpu=1, gpu=1),  # unused: a missing block is pretrain's (_baseline_default)
        description="one single-stage baseline run; a fraction of a GPU lets two or more share "
        "one; default: resources.pretrain",
    )

    @model_validator(mode="before")
    @classmethod
    def _baseline_default(cls, data: Any) -> Any:
        """No `baseline` block: a baseline asks for what a pre-train asks for, as it always did
        (a baseline trains a whole network too), so files without one run as before."""
        if isinstance(data, dict) and data.get("baseline") is None:
            pretrain = data.get("pretrain", cls.model_fields["pretrain"].default)
            data = {**data, "baseline": pretrain}
        return data


class ExecutionSettings(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(
        True,
        description="the older switch of mixed precision: false forces fp32 (precision auto "
        "resolves to fp32; precision bf16 with amp false is an error)",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: on CUDA bf16 autocast at compute capability 8.0+ (native bf16), "
        "else fp16 autocast with a loss scaler; on the CPU bf16 with native bf16 (AVX512-BF16 "
        "/ AMX), else fp32 (ltsweep/sweep/precision.py). bf16 below capability 8.0 and fp16 "
        "on the CPU are refused; the precision is in the unit keys",
    )
    gpu_capability: str = Field(
        "auto",
        pattern=r"^(auto|[0-9]+\.[0-9]+)$",
        description='compute capability ("major.minor", e.g. "7.0" for a V100) of the GPUs '
        "the CUDA units run on, which decides bf16 (8.0+) or fp16 for precision auto; auto: "
        "the planning host's GPUs (the lowest), or 8.0+ assumed on a host without any",
    )
    memory_format: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="auto: channels_last on CUDA and with bf16 on the CPU, else contiguous"
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto", description="torch.compile the training step's model; auto: off"
    )
    group_finetunes: bool = Field(
        True, description="train the fine-tunes of a pre-train together; false: one Tune trial each"
    )
    max_group_size: int = Field(
        512, ge=1, description="most fine-tune trials stacked in one Tune trial"
    )
    finetune_memory_gb: float = Field(
        4.0,
        gt=0,
        description="memory one stacked fine-tune group may take (weights, optimiser state, "
        "activations; estimated per trial): groups are cut to fit",
    )
    feature_dtype: Literal["float32", "float16"] = "float32"
    max_failures: int = Field(
        3,
        ge=0,
        description="retries of a unit whose worker was lost (its node or process died), on "
        "the nodes that are left; a unit that raises is recorded as failed, and the next run "
        "retries it",
    )
    gpu_tflops: float = Field(
        25.0,
        gt=0,
        description="assumed sustained TFLOP/s of one GPU for `ltsweep plan`'s estimate "
        "(25: a conservative bf16 rate of an A100-class GPU on ResNet18)",
    )

    @field_validator("gpu_capability", mode="before")
    @classmethod
    def _capability_as_text(cls, value: Any) -> Any:
        # YAML reads `gpu_capability: 7.0` as a number; "7.0" is what is meant
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{float(value)}"
        return value

    @model_validator(mode="after")
    def _check_precision(self) -> ExecutionSettings:
        if self.precision in ("bf16", "fp16") and not self.amp:
            raise ValueError(
                f"precision: {self.precision} contradicts amp: false (drop amp, or say fp32)"
            )
        return self


def _noise_rate(x: float) -> float:
    if not 0 <= x < 1:
        raise ValueError(f"{x} is not in [0, 1)")
    return x


def _gamma_value(g: float) -> float:
    if not g >= 1:
        raise ValueError(f"{g} is not >= 1 (gamma is the largest/smallest class ratio)")
    return g


def _one_of(allowed: Any, what: str, lower: bool = False) -> AfterValidator:
    return AfterValidator(lambda v: _member(v.lower() if lower else v, allowed, what))


NoiseRate = Annotated[float, AfterValidator(_noise_rate)]
#: a seed every generator takes (numpy's need < 2**32; a pre-train also uses seed + 1)
MAX_SEED = 2**31 - 2
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Gamma = Annotated[float, AfterValidator(_gamma_value)]
SSLName = Annotated[str, _one_of(SSL_SETTINGS, "SSL method")]
LossName = Annotated[str, _one_of(LOSSES, "loss", lower=True)]
HeadName = Annotated[str, _one_of(HEADS, "head")]


class Grid(Strict):
    ssl: list[SSLName] = Field(default_factory=lambda: ["simsiam"])
    gamma: list[Gamma] = Field(default_factory=lambda: [1.0], min_length=1)
    noise: list[NoiseRate] = Field(default_factory=lambda: [0.0], min_length=1)
    noise_type: Literal["symmetric", "cifar-n"] = Field(
        "symmetric", description="cifar-n: the real labels of data.noisy_labels (grid.noise [0.0])"
    )
    losses: list[LossName] = Field(default_factory=lambda: ["la+sl"], min_length=1)
    head: list[HeadName] = Field(default_factory=lambda: ["auto"], min_length=1)
    seeds: list[Seed] = Field(
        default_factory=lambda: [0], min_length=1, description="noise and fine-tune seeds"
    )
    data_seeds: list[Seed] = Field(
        default_factory=lambda: [0], min_length=1, description="subsampling and pre-train seeds"
    )
    pretrain_epochs: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list,
        description="fine-tune from these pre-train epochs too (default: the last one)",
    )


def _safe_name(name: str) -> str:
    if not 1 <= len(name) <= 100:
        raise ValueError(f"{len(name)} characters; a name has 1 to 100")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name in (".", ".."):
        raise ValueError(
            f"{name!r} is not a safe folder name (letters, digits, '-', '_', '.'; not . or ..)"
        )
    return name


#: the smallest class of each training set (digits: before its test split), for gamma's bound
SMALLEST_CLASS = {"digits": 174, "cifar10": 5000, "cifar100": 500}


def _member(value: str, allowed: Any, what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r} (expected one of {', '.join(allowed)})")
    return value


class Sweep(Strict):
    name: Annotated[str, AfterValidator(_safe_name)] = Field(
        description="the run folder's name: letters, digits, '-', '_', '.'; at most 100"
    )
    description: str = ""
    data: DataSettings = DataSettings()
    backbone: BackboneSettings = BackboneSettings()
    grid: Grid = Grid()
    ssl: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-method overrides")
    loss: LossSettings = LossSettings()
    resources: ResourceSettings = ResourceSettings()
    execution: ExecutionSettings = ExecutionSettings()
    baselines: BaselineSettings = BaselineSettings()

    @model_validator(mode="after")
    def _check_ssl_overrides(self) -> Sweep:
        for method, overrides in self.ssl.items():
            if method not in SSL_SETTINGS:
                raise ValueError(
                    f"ssl.{method}: unknown SSL method (expected one of {', '.join(SSL_SETTINGS)})"
                )
            try:
                method_settings(method, overrides)
            except ValidationError as err:
                raise ValueError(
                    first_error(err, prefix=f"ssl.{method}", model=SSL_SETTINGS[method])
                ) from None
        return self

    @model_validator(mode="after")
    def _check_sizes(self) -> Sweep:
        """What the data set can give: a test split, and at least one sample per class."""
        dataset = self.data.dataset
        if dataset not in SMALLEST_CLASS:
            return self
        n_max = SMALLEST_CLASS[dataset]
        if dataset == "digits":
            if self.data.test_per_class >= n_max:
                raise ValueError(
                    f"data.test_per_class: {self.data.test_per_class} leaves no training image "
                    f"(the smallest digits class has {n_max}; at most {n_max - 1})"
                )
            n_max -= self.data.test_per_class
        for i, g in enumerate(self.grid.gamma):
            if g > n_max:
                raise ValueError(
                    f"grid.gamma[{i}]: {g:g} leaves the smallest class no sample "
                    f"(the largest {dataset} class has {n_max}; gamma is at most {n_max})"
                )
        return self

    @model_validator(mode="after")
    def _check_work(self) -> Sweep:
        """Something to run, and intermediate pre-train epochs that exist."""
        if not self.grid.ssl and not self.baselines.methods:
            raise ValueError(
                "grid.ssl: empty, and baselines.methods is empty too: the sweep has nothing to run"
            )
        for method in self.grid.ssl:
            epochs = self.ssl_settings(method).epochs
            for i, e in enumerate(self.grid.pretrain_epochs):
                if e > epochs:
                    raise ValueError(
                        f"grid.pretrain_epochs[{i}]: {e} is beyond {method}'s {epochs} "
                        f"pre-train epochs (ssl.{method}.epochs)"
                    )
        return self

    @model_validator(mode="after")
    def _check_baseline_tables(self) -> Sweep:
        """Each chosen baseline's per-data-set settings resolve for this data set and every
        noise rate: an emptied table is this file's error, not a worker's."""
        bs = self.baselines
        for method in bs.methods:
            settings = getattr(bs, BASELINE_SETTINGS_FIELD.get(method, ""), None)
            if settings is not None:
                settings.check(self.data.dataset, list(self.grid.noise))
        return self

    @model_validator(mode="after")
    def _check_baselines_dataset(self) -> Sweep:
        """Clothing1M baselines are refused: they would run with CIFAR settings.

        The references train Clothing1M from ImageNet weights with their own recipe
        (DivideMix's Train_clothing1M.py: ResNet-50, lr 0.002, wd 1e-3, alpha 0.5, a
        negative-entropy penalty in warm-up, 1,000 class-balanced batches an epoch; ELR+'s
        config_clothing1m.json likewise), and ImageNet weights cannot be downloaded here.
        """
        if self.data.dataset == "clothing1m" and self.baselines.methods:
            raise ValueError(
                "baselines.methods: single-stage baselines are not supported on clothing1m "
                "(they would train from scratch with CIFAR settings; the references' Clothing1M "
                "recipes start from ImageNet weights); remove them"
            )
        return self

    @model_validator(mode="after")
    def _check_noise_type(self) -> Sweep:
        labels, noise_type = self.data.noisy_labels, self.grid.noise_type
        if noise_type == "symmetric":
            if labels is not None:
                raise ValueError(
                    "data.noisy_labels: only read with grid.noise_type: cifar-n (it is symmetric)"
                )
            return self
        if labels is None:
            raise ValueError(
                f"data.noisy_labels: grid.noise_type {noise_type} needs a label file {{path: ..., key: ...}}"
            )
        if self.data.dataset not in ("cifar10", "cifar100"):
            raise ValueError(
                f"grid.noise_type: {noise_type} labels exist for cifar10 and cifar100 only, "
                f"not {self.data.dataset}"
            )
        if self.grid.noise != [0.0]:
            raise ValueError(
                f"grid.noise: must be [0.0] with noise_type {noise_type}, the file's labels are "
                f"the noise (got {self.grid.noise})"
            )
        return self

    def ssl_settings(self, method: str) -> SSLSettings:
        return method_settings(method, self.ssl.get(method, {}))

    def resolved_sl_threshold(self) -> float:
        """The SuperLoss threshold of every unit: loss.sl_threshold, or log(C) when it is null."""
        if self.loss.sl_threshold is not None:
            return self.loss.sl_threshold
        return math.log(self.num_classes)

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.data.dataset]


def method_settings(method: str, overrides: dict[str, Any]) -> SSLSettings:
    """A method's settings with `overrides` laid over ITS defaults, nested blocks included.

    `ssl: {simclr: {finetune: {epochs: 5}}}` changes SimCLR's fine-tune epochs and keeps the
    rest of SimCLR's own fine-tune protocol (linear head, lr 1e-3), not the generic defaults.
    """
    cls = SSL_SETTINGS[method]
    merged = dict(overrides)
    for name, value in overrides.items():
        field = cls.model_fields.get(name)
        default = field.default if field is not None else None
        if isinstance(value, dict) and isinstance(default, BaseModel):
            merged[name] = {**default.model_dump(), **value}
    return cls(**merged)


def parse_sweep(data: Any, source: str = "<sweep>") -> Sweep:
    return parse(Sweep, data, source, "sweep file")


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read and validate a sweep file; raise SpecError with a one-line message."""
    return parse_sweep(read_yaml(path, "sweep file"), str(path))


def check_data_root(sweep: Sweep, source: str | None = None) -> None:
    """Fail before scheduling anything if the data set needs a root (or a file) that is not there."""
    where = f"{source}: " if source else ""
    if sweep.data.noisy_labels is not None:
        check_label_file(sweep.data.noisy_labels, where)
    if sweep.data.dataset == "digits":
        return
    root = sweep.data.resolved_root()
    if root is None:
        raise SpecError(
            f"{where}data.root: {sweep.data.dataset} needs a data root (set data.root or LTSWEEP_DATA)"
        )
    if not root.is_dir() and not sweep.data.download:
        raise SpecError(f"{where}data.root: {root} does not exist")


def check_label_file(labels: NoisyLabelFile, where: str = "") -> None:
    """The label file exists and holds the array `key` (read from the .npz's listing only)."""
    path = labels.resolved_path()
    if not path.is_file():
        raise SpecError(f"{where}data.noisy_labels.path: {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy"))
    except (OSError, zipfile.BadZipFile) as err:
        raise SpecError(
            f"{where}data.noisy_labels.path: {path} is not an .npz archive ({err})"
        ) from None
    if labels.key not in names:
        raise SpecError(
            f"{where}data.noisy_labels.key: {path} has no array {labels.key!r} "
            f"(available: {', '.join(names)})"
        )
