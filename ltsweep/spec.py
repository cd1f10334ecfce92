"""The sweep file: its schema, and the one-line errors that name the field at fault.

A sweep file is YAML validated by pydantic before anything runs. Errors are reported as
`grid.noise[3]: 1.2 is not in [0, 1)` so a user can find the line. Imports no torch: `ltsweep
plan` and `ltsweep status` must answer in a blink.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationError, model_validator

from ltsweep.baseline_config import BaselineSettings
from ltsweep.ssl_config import SSL_SETTINGS, SSLSettings, Strict

DATASETS = ("digits", "cifar10", "cifar100", "clothing1m")
LOSSES = ("ce", "ce+sl", "la", "la+sl")
HEADS = ("auto", "full", "last")
#: classes per data set, needed by the plan before any data is read
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "clothing1m": 14}


class SpecError(ValueError):
    """A sweep or profile file is invalid; str() is one line naming the file and field."""


class DataSettings(Strict):
    dataset: Literal["digits", "cifar10", "cifar100", "clothing1m"] = "digits"
    root: str | None = Field(None, description="data root; default: $LTSWEEP_DATA")
    image_size: int = Field(
        32, ge=8, description="digits: upsampled to this size; clothing1m: crop size (224)"
    )
    test_per_class: int = Field(
        40, ge=1, description="digits only: balanced held-out test images per class"
    )
    download: bool = Field(
        False, description="CIFAR only: fetch the archive if missing (never implicit)"
    )

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


class ResourceSettings(Strict):
    pretrain: Resources = Resources(cpu=1, gpu=1)
    finetune: Resources = Resources(cpu=1, gpu=0.25)


class ExecutionSettings(Strict):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(
        True, description="mixed precision and channels-last on CUDA (ignored on the CPU)"
    )
    group_finetunes: bool = Field(
        True, description="train the fine-tunes of a pre-train together; false: one Tune trial each"
    )
    max_group_size: int = Field(
        512, ge=1, description="most fine-tune trials stacked in one Tune trial"
    )
    feature_dtype: Literal["float32", "float16"] = "float32"
    max_failures: int = Field(0, ge=0, description="Tune retries of a failed unit")


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
Gamma = Annotated[float, AfterValidator(_gamma_value)]
SSLName = Annotated[str, _one_of(SSL_SETTINGS, "SSL method")]
LossName = Annotated[str, _one_of(LOSSES, "loss", lower=True)]
HeadName = Annotated[str, _one_of(HEADS, "head")]


class Grid(Strict):
    ssl: list[SSLName] = Field(default_factory=lambda: ["simsiam"])
    gamma: list[Gamma] = Field(default_factory=lambda: [1.0], min_length=1)
    noise: list[NoiseRate] = Field(default_factory=lambda: [0.0], min_length=1)
    noise_type: Literal["symmetric"] = "symmetric"
    losses: list[LossName] = Field(default_factory=lambda: ["la+sl"], min_length=1)
    head: list[HeadName] = Field(default_factory=lambda: ["auto"], min_length=1)
    seeds: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="noise and fine-tune seeds"
    )
    data_seeds: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="subsampling and pre-train seeds"
    )
    pretrain_epochs: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list,
        description="fine-tune from these pre-train epochs too (default: the last one)",
    )


def _member(value: str, allowed: Any, what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r} (expected one of {', '.join(allowed)})")
    return value


class Sweep(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
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
                SSL_SETTINGS[method](**overrides)
            except ValidationError as err:
                raise ValueError(_first_error(err, prefix=f"ssl.{method}")) from None
        return self

    def ssl_settings(self, method: str) -> SSLSettings:
        return SSL_SETTINGS[method](**self.ssl.get(method, {}))

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.data.dataset]


def _loc(parts: tuple[Any, ...]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def _first_error(err: ValidationError, prefix: str = "") -> str:
    e = err.errors()[0]
    loc = _loc(tuple(e["loc"]))
    if prefix:
        loc = f"{prefix}.{loc}" if loc else prefix
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = f"unknown key {loc.rsplit('.', 1)[-1]!r}"
    elif e["type"] == "missing":
        msg = "required field is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        if msg.startswith(("ssl.",)) and not loc:
            return msg
    else:
        msg = (
            f"{e.get('input')!r}: {msg}"
            if "input" in e and not isinstance(e.get("input"), dict)
            else msg
        )
    return f"{loc}: {msg}" if loc else msg


def parse_sweep(data: Any, source: str = "<sweep>") -> Sweep:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a sweep file is a YAML mapping, got {type(data).__name__}")
    try:
        return Sweep(**data)
    except ValidationError as err:
        raise SpecError(f"{source}: {_first_error(err)}") from None


def load_sweep(path: str | os.PathLike[str]) -> Sweep:
    """Read and validate a sweep file; raise SpecError with a one-line message."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: no such sweep file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{p}{where}: malformed YAML: {problem}") from None
    return parse_sweep(data, str(p))


def check_data_root(sweep: Sweep, source: str | None = None) -> None:
    """Fail before scheduling anything if the data set needs a root that is not there."""
    if sweep.data.dataset == "digits":
        return
    where = f"{source}: " if source else ""
    root = sweep.data.resolved_root()
    if root is None:
        raise SpecError(
            f"{where}data.root: {sweep.data.dataset} needs a data root (set data.root or LTSWEEP_DATA)"
        )
    if not root.is_dir() and not sweep.data.download:
        raise SpecError(f"{where}data.root: {root} does not exist")
