"""Settings of the single-stage baselines: the `baselines:` block of a sweep file.

The paper compares the two-stage approach with networks trained from scratch in one stage:
CE, LA, SL and LA+SL (the fine-tune losses, on the whole network), ELR and DivideMix
(PROTOCOL.md, Baselines). Defaults are those of the public reference implementations for
CIFAR, every one a named, overridable field. Baselines run over the same grid as the
two-stage trials (grid.gamma x grid.noise x grid.seeds x grid.data_seeds), so a baseline and
a fine-tune trial of the same cell train on exactly the same noisy labels.

No baseline runs unless the sweep lists it in `methods`: the default is the empty list, so
adding this block to the schema changes no existing sweep's plan.

`BASELINE_METHODS`, at the end, is the registry: per name, how its params are resolved from
a sweep and what the cost model counts (docs/extending.md adds a baseline). Kept free of
torch so that validating a sweep is instant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field

from ltsweep.sweep.base import Strict
from ltsweep.sweep.losses import LOSSES, SUPERVISED_LOSSES

if TYPE_CHECKING:  # schema imports this module
    from ltsweep.sweep.schema import Sweep

#: single-stage baselines by name; the first four are the fine-tune losses from scratch
BASELINES = ("ce", "la", "sl", "la+sl", "elr", "elr+", "dividemix")
#: the `baselines:` field holding a method's own settings (methods without one: none)
BASELINE_SETTINGS_FIELD = {"elr": "elr", "elr+": "elr_plus", "dividemix": "dividemix"}
SUPERVISED = SUPERVISED_LOSSES


def _baseline_name(value: str) -> str:
    value = value.lower()
    if value not in BASELINES:
        raise ValueError(f"unknown baseline {value!r} (expected one of {', '.join(BASELINES)})")
    return value


BaselineName = Annotated[str, AfterValidator(_baseline_name)]


class ELRValues(Strict):
    beta: float = Field(ge=0, lt=1, description="temporal-ensembling momentum of the targets")
    lam: float = Field(ge=0, description="weight of the ELR regulariser")


class ELRSettings(Strict):
    """Early-Learning Regularisation (Liu et al. 2020) [shengliu66/ELR, config_cifar*.json]."""

    beta: float | None = Field(
        None, ge=0, lt=1, description="target momentum; null: by_dataset[data set].beta"
    )
    lam: float | None = Field(
        None, ge=0, description="regulariser weight (the reference's lambda); null: by_dataset"
    )
    by_dataset: dict[str, ELRValues] = Field(
        default_factory=lambda: {
            "cifar10": ELRValues(beta=0.7, lam=3.0),
            "cifar100": ELRValues(beta=0.9, lam=7.0),
            # not in the reference configs: 10 classes like CIFAR-10, and the ELR paper's
            # Clothing1M values are CIFAR-10's
            "digits": ELRValues(beta=0.7, lam=3.0),
            "clothing1m": ELRValues(beta=0.7, lam=3.0),
        },
        description="per data set defaults used where beta / lam are null",
    )

    def resolved(self, dataset: str) -> ELRValues:
        """beta and lambda for `dataset`: the explicit fields win, else the data set's row."""
        row = self.by_dataset.get(dataset)
        beta = self.beta if self.beta is not None else (row.beta if row else None)
        lam = self.lam if self.lam is not None else (row.lam if row else None)
        if beta is None or lam is None:
            raise ValueError(
                f"baselines.elr.by_dataset: no beta/lam for data set {dataset!r}; "
                f"set baselines.elr.beta and .lam, or add by_dataset.{dataset}"
            )
        return ELRValues(beta=beta, lam=lam)

    def check(self, dataset: str, noises: list[float]) -> None:
        """The settings resolve for `dataset` (a ValueError naming the field, else nothing)."""
        self.resolved(dataset)


class ELRPlusValues(Strict):
    """ELR+'s settings for one data set (shengliu66/ELR, ELR_plus/config_<data set>.json)."""

    beta: float = Field(ge=0, lt=1, description="target momentum (train_loss.args.beta)")
    lam: float = Field(ge=0, description="regulariser weight (train_loss.args.lambda)")
    mixup_alpha: float = Field(ge=0, description="mixup Beta(alpha, alpha); 0: no mixup")
    ema_alpha: float = Field(ge=0, lt=1, description="weight-averaging momentum (ema_alpha)")
    ema_rampup_steps: int = Field(
        ge=0,
        description="ema_step: momentum = sigmoid_rampup(step + 1, ema_step) * ema_alpha; "
        "0 (ema_update false): min(1 - 1 / (step + 1), ema_alpha)",
    )
    coef_rampup_steps: int = Field(
        ge=0, description="coef_step: the regulariser's sigmoid ramp-up in steps; 0: none"
    )
    label_times_target: bool = Field(
        description="the reference's CIFAR-100 branch (num_classes == 100): the CE's mixed "
        "one-hot label is multiplied by the target and renormalised"
    )
    lr_decay_at: float | None = Field(
        gt=0,
        le=1,
        description="lr x 0.1 from this fraction of the epochs (the reference's MultiStepLR "
        "milestone / epochs); null: the shared baselines schedule",
    )
    ramp_steps_per_epoch: int = Field(
        391,
        ge=1,
        description="the batches per epoch ema_rampup_steps and coef_rampup_steps are counted "
        "in: the reference's 391 (50,000 / 128, rounded up). Each ramp is stretched to the "
        "subset's own batches per epoch, so it ends at the epoch the reference's ends in "
        "(40,000 / 391 = epoch 102.3), whatever gamma leaves of the training set",
    )


#: [shengliu66/ELR, ELR_plus/config_cifar10.json, config_cifar100.json]: mixup_alpha 1,
#: ema_alpha 0.997, ema_step 40000; CIFAR-10 beta 0.7, lambda 3, coef_step 0, MultiStepLR
#: [150] of 200 epochs; CIFAR-100 beta 0.9, lambda 7, coef_step 40000, [200] of 250 epochs,
#: and model/loss.py's num_classes == 100 branch. Both: SGD lr 0.02, momentum 0.9, wd 5e-4,
#: batch 128, no warm-up: the shared budget's defaults.
_ELR_PLUS_CIFAR10 = dict(
    beta=0.7,
    lam=3.0,
    mixup_alpha=1.0,
    ema_alpha=0.997,
    ema_rampup_steps=40000,
    coef_rampup_steps=0,
    label_times_target=False,
    lr_decay_at=150 / 200,
)
_ELR_PLUS = {
    "cifar10": _ELR_PLUS_CIFAR10,
    "cifar100": _ELR_PLUS_CIFAR10
    | dict(
        beta=0.9, lam=7.0, coef_rampup_steps=40000, label_times_target=True, lr_decay_at=200 / 250
    ),
    "digits": _ELR_PLUS_CIFAR10,  # not in the reference: 10 classes, CIFAR-10's
}


class ELRPlusSettings(Strict):
    """ELR+ (Liu et al. 2020, Sec. 4): ELR with two networks, weight averaging and mixup.

    The paper compares with this variant: its baselines use "network ensembling, weight
    averaging and mix-up" (Section 3), and its 95.8 % (CIFAR-10, gamma 1, 20 % noise) is
    ELR+'s figure (plain ELR: 91.2 %, shengliu66/ELR README). [shengliu66/ELR, ELR_plus/].
    A field left null takes the data set's row of `by_dataset`.

    The reference's ramps are counted in its steps (391 per epoch on the full CIFAR set); a
    long-tailed subset has fewer batches per epoch, so they are stretched by
    `ramp_steps_per_epoch` to end at the reference's epoch: counted in raw steps, the EMA
    momentum would end CIFAR-10 gamma 100 at 0.27 instead of 0.997. On purpose unlike the
    reference: the network is ltsweep's ResNet18 (the reference uses PreAct-ResNet18), one
    backbone across the whole comparison.
    """

    beta: float | None = Field(None, ge=0, lt=1)
    lam: float | None = Field(None, ge=0)
    mixup_alpha: float | None = Field(None, ge=0)
    ema_alpha: float | None = Field(None, ge=0, lt=1)
    ema_rampup_steps: int | None = Field(None, ge=0)
    coef_rampup_steps: int | None = Field(None, ge=0)
    label_times_target: bool | None = None
    lr_decay_at: float | None = Field(None, gt=0, le=1)
    ramp_steps_per_epoch: int | None = Field(None, ge=1)
    by_dataset: dict[str, ELRPlusValues] = Field(
        default_factory=lambda: {k: ELRPlusValues(**v) for k, v in _ELR_PLUS.items()},
        description="per data set defaults used where a field is null",
    )

    def resolved(self, dataset: str) -> ELRPlusValues:
        """The explicit fields over the data set's row."""
        row = self.by_dataset.get(dataset)
        if row is None:
            raise ValueError(
                f"baselines.elr_plus.by_dataset: no settings for data set {dataset!r}; "
                f"add by_dataset.{dataset}"
            )
        explicit = {
            k: v for k, v in self.model_dump(exclude={"by_dataset"}).items() if v is not None
        }
        return ELRPlusValues(**(row.model_dump() | explicit))

    def check(self, dataset: str, noises: list[float]) -> None:
        """The settings resolve for `dataset` (a ValueError naming the field, else nothing)."""
        self.resolved(dataset)


#: lambda_u per symmetric noise level (PROTOCOL.md, Baselines: "lambda_u by noise").
#: Source: the DivideMix paper's Appendix B (Li et al., ICLR 2020; its authors point to that
#: table in LiJunnan1992/DivideMix issues #17 and #41). CIFAR-10: 0 / 25 / 25 / 50 at
#: 20 / 50 / 80 / 90 %; CIFAR-100: 25 / 150 / 150 / 150. Sources disagree on CIFAR-100 at 20 %:
#: this table had 0 (CIFAR-10's value carried over); the appendix (as quoted in
#: arpit2412/InstanceGM issue #1) and Train_cifar.py's argparse default say 25.
#: Choice: 25, the appendix's value.
_LAMBDA_U = {
    "cifar10": {0.2: 0.0, 0.5: 25.0, 0.8: 25.0, 0.9: 50.0},
    "cifar100": {0.2: 25.0, 0.5: 150.0, 0.8: 150.0, 0.9: 150.0},
    "digits": {0.2: 0.0, 0.5: 25.0, 0.8: 25.0, 0.9: 50.0},  # 10 classes: CIFAR-10's
    "clothing1m": {1.0: 0.0},  # Train_Clothing1M.py: lambda_u 0
}


#: clean-probability threshold per symmetric noise level, every data set. Source: the DivideMix
#: authors, LiJunnan1992/DivideMix issue #10 ("lambda_u=150, and p_threshold=0.6 for 90%
#: noise"); Train_cifar.py's default 0.5 elsewhere. 80 % keeps 0.5 (the issue's reporter ran
#: 0.5 / 0.6 at 80 / 90 % and matched the paper).
_P_THRESHOLD = {0.2: 0.5, 0.5: 0.5, 0.8: 0.5, 0.9: 0.6}


def _at_level(table: dict[float, float], noise: float) -> float:
    """The entry of the nearest reference level at or above `noise` (the highest if none)."""
    levels = sorted(table)
    above = [lv for lv in levels if lv >= noise - 1e-12]
    return float(table[above[0] if above else levels[-1]])


class DivideMixSettings(Strict):
    """DivideMix (Li et al. 2020) [LiJunnan1992/DivideMix, Train_CIFAR.py].

    `schedule: reference` (the default) trains as Train_cifar.py does: 300 epochs, the
    learning rate divided by 10 from epoch 150, whatever the shared budget says;
    `schedule: shared` trains on the shared budget instead (`baselines.epochs`, its cosine
    decay). On purpose unlike the reference: the networks are ltsweep's ResNet18 (the
    reference uses PreAct-ResNet18), one backbone across the whole comparison.
    """

    schedule: Literal["reference", "shared"] = Field(
        "reference",
        description="reference: `epochs` epochs, lr x 0.1 from `lr_decay_epoch` "
        "(Train_cifar.py); shared: the baselines' budget (baselines.epochs, .schedule)",
    )
    epochs: int = Field(
        300, ge=1, description="epochs of the reference schedule (warm-up included)"
    )
    lr_decay_epoch: int = Field(
        150, ge=1, description="the reference schedule's lr / 10 from this epoch (0-based)"
    )

    warmup_epochs: int | None = Field(
        None, ge=0, description="CE warm-up epochs (part of `epochs`); null: warmup_by_dataset"
    )
    warmup_by_dataset: dict[str, int] = Field(
        default_factory=lambda: {"cifar10": 10, "cifar100": 30, "digits": 10, "clothing1m": 1}
    )
    alpha: float = Field(4.0, gt=0, description="MixMatch Beta(alpha, alpha)")
    T: float = Field(0.5, gt=0, description="sharpening temperature")
    p_threshold: float | None = Field(
        None, ge=0, le=1, description="clean probability threshold; null: p_threshold_table"
    )
    p_threshold_table: dict[float, float] = Field(
        default_factory=lambda: dict(_P_THRESHOLD),
        description="{reference noise level: p_threshold}, looked up like lambda_u_table",
    )
    lambda_u: float | None = Field(
        None, ge=0, description="unlabelled-loss weight; null: lambda_u_table at the noise rate"
    )
    lambda_u_table: dict[str, dict[float, float]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in _LAMBDA_U.items()},
        description="data set -> {reference noise level: lambda_u}; a rate takes the entry of "
        "the nearest level at or above it (the highest level if none)",
    )
    rampup_epochs: float = Field(16, gt=0, description="linear ramp-up of lambda_u after warm-up")
    average_losses_above: float | None = Field(
        0.8,
        description="noise rates above this fit the GMM on the mean of the last "
        "average_losses_epochs normalised losses (the reference does so at 90 %); null: never",
    )
    average_losses_epochs: int = Field(5, ge=1)
    mix_batch_size: int | None = Field(
        None,
        ge=1,
        description="labelled (and unlabelled) batch of the MixMatch phase; null: batch_size // 2 "
        "(the reference warms up with 2 x 64 and mixes 64 + 64)",
    )
    prior_penalty: bool = Field(
        True, description="the reference's uniform-prior penalty sum(prior log(prior / mean p))"
    )
    ensemble: Literal["logits", "softmax"] = Field(
        "logits",
        description="test prediction from the sum of both nets' logits (the reference) or softmaxes",
    )
    gmm_max_iter: int = Field(10, ge=1)
    gmm_tol: float = Field(1e-2, gt=0)
    gmm_reg_covar: float = Field(5e-4, gt=0)

    def resolved_warmup(self, dataset: str) -> int:
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        if dataset not in self.warmup_by_dataset:
            raise ValueError(
                f"baselines.dividemix.warmup_by_dataset: no warm-up for data set {dataset!r}; "
                f"set baselines.dividemix.warmup_epochs or add warmup_by_dataset.{dataset}"
            )
        return self.warmup_by_dataset[dataset]

    def resolved_lambda_u(self, dataset: str, noise: float) -> float:
        """lambda_u of the nearest reference noise level at or above `noise` (else the highest)."""
        if self.lambda_u is not None:
            return self.lambda_u
        table = self.lambda_u_table.get(dataset)
        if not table:
            raise ValueError(
                f"baselines.dividemix.lambda_u_table: no entry for data set {dataset!r}; "
                f"set baselines.dividemix.lambda_u or add lambda_u_table.{dataset}"
            )
        return _at_level(table, noise)

    def resolved_p_threshold(self, noise: float) -> float:
        """p_threshold, else the table's entry of the nearest reference level at or above `noise`."""
        if self.p_threshold is not None:
            return self.p_threshold
        return _at_level(self.p_threshold_table, noise)

    def check(self, dataset: str, noises: list[float]) -> None:
        """Every table resolves for `dataset` at every noise rate of the grid."""
        self.resolved_warmup(dataset)
        if self.p_threshold is None and not self.p_threshold_table:
            raise ValueError(
                "baselines.dividemix.p_threshold_table: empty; set "
                "baselines.dividemix.p_threshold or give the table"
            )
        for noise in noises:
            self.resolved_lambda_u(dataset, noise)

    def averages_losses(self, noise: float) -> bool:
        return self.average_losses_above is not None and noise > self.average_losses_above

    def resolved_lr_decay_epoch(self) -> int | None:
        """The epoch the learning rate drops by 10 at; None: the shared schedule."""
        return self.lr_decay_epoch if self.schedule == "reference" else None


class BaselineSettings(Strict):
    """The `baselines:` block: which baselines run and the training budget they share.

    Budget defaults follow the reference CIFAR implementations (SGD momentum 0.9, lr 0.02,
    batch 128 [ELR; DivideMix warms up with 2 x 64]); weight decay 5e-4 [DivideMix; ELR
    uses 1e-3], cosine decay per epoch. epochs = 200: the paper says single-stage runs keep
    "the number of epochs" of the two-stage approach without giving it, and the pre-train
    budget (800-1000 epochs) is not what a from-scratch CIFAR baseline is trained for; the
    references use 150 (ELR) and 300 (DivideMix). DivideMix trains its reference's own 300
    epochs and step schedule unless `dividemix.schedule: shared`; its warm-up counts in its
    epochs. Every baseline trains ltsweep's ResNet18, not the references' PreAct-ResNet18:
    one backbone across the comparison.
    """

    methods: list[BaselineName] = Field(
        default_factory=list, description=f"which of {', '.join(BASELINES)} run (default: none)"
    )
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=2)
    optimizer: Literal["sgd"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    lr: float = Field(0.02, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="cosine: lr * (1 + cos(pi * epoch / epochs)) / 2, set per epoch"
    )
    crop_padding: int = Field(4, ge=0, description="random crop after zero padding (CIFAR: 4)")
    flip_p: float = Field(0.5, ge=0, le=1)
    checkpoint_every: int = Field(10, ge=1, description="epochs between checkpoints")
    elr: ELRSettings = ELRSettings()
    elr_plus: ELRPlusSettings = ELRPlusSettings()
    dividemix: DivideMixSettings = DivideMixSettings()

    def budget(self, method: str | None = None) -> dict[str, object]:
        """The training settings that determine a baseline's output (checkpointing does not):
        the shared ones, with the method's own epochs where it has them (`BaselineSpec.epochs`:
        DivideMix under its reference schedule)."""
        out = self._shared_budget()
        own = BASELINE_METHODS[method].epochs if method in BASELINE_METHODS else None
        epochs = own(self) if own is not None else None
        if epochs is not None:
            out["epochs"] = epochs
        return out

    def _shared_budget(self) -> dict[str, object]:
        return self.model_dump(
            include={
                "epochs",
                "batch_size",
                "optimizer",
                "momentum",
                "lr",
                "weight_decay",
                "schedule",
                "crop_padding",
                "flip_p",
            }
        )


# -- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingCost:
    """What a baseline unit's training FLOPs depend on (`ltsweep.sweep.estimate` fills it)."""

    epochs: int
    samples: int  # the long-tailed training subset
    clean_fraction: float  # 1 - the flip rate of its labels
    forward: float  # FLOPs of one network's forward of one image (encoder + classifier)
    params: dict[str, Any]  # the unit's resolved method params (`BaselineSpec.params`)


def dividemix_training_flops(c: TrainingCost) -> float:
    """Both networks: a CE step per sample during the warm-up; after it, every epoch a forward
    of the subset (the GMM's losses) and, per labelled sample, 2 forwards of its views (label
    refinement), 4 of an unlabelled pair (co-guessing) and a training step on 4 mixed images.
    The labelled fraction is taken as the clean fraction."""
    warmup = min(c.params["warmup_epochs"], c.epochs)
    labelled = c.samples * c.clean_fraction
    per_epoch = 2 * (c.samples * c.forward + labelled * (2 + 4 + 3 * 4) * c.forward)
    return warmup * 2 * c.samples * 3 * c.forward + (c.epochs - warmup) * per_epoch


@dataclass(frozen=True)
class BaselineSpec:
    """A single-stage baseline as the sweep, plan and estimate layers know it, without torch.

    Its trainer (params dataclass and `Method`) is registered under the same name in
    `ltsweep.train.baselines.registry.TRAINERS`; tests/train/test_registries.py keeps the two
    in step and builds every trainer from the params this entry resolves.
    """

    #: (sweep, method name, the cell's noise rate) -> the method's own params: only what
    #: changes its output (they enter the unit's key) and what its params dataclass takes
    params: Callable[[Sweep, str, float], dict[str, Any]]
    #: cost hints: networks trained side by side, forwards of each per sample and step beyond
    #: its training step (ELR+: the other network's weight average), or a cost model of its own
    networks: int = 1
    extra_forwards: int = 0
    training_flops: Callable[[TrainingCost], float] | None = None
    #: the method's own epoch budget, if it has one (None from it: the shared `epochs`)
    epochs: Callable[[BaselineSettings], int | None] | None = None


def _loss_params(sweep: Sweep, method: str, noise: float) -> dict[str, Any]:
    """A supervised baseline: its loss and the loss settings that loss reads."""
    spec = LOSSES[method]
    out: dict[str, Any] = {"loss": method}
    if spec.logit_adjust:
        out["la_tau"] = sweep.loss.la_tau
    if spec.superloss:
        out["sl_lambda"] = sweep.loss.sl_lambda
        out["sl_threshold"] = sweep.resolved_sl_threshold()
    return out


def _elr_params(sweep: Sweep, method: str, noise: float) -> dict[str, Any]:
    return sweep.baselines.elr.resolved(sweep.data.dataset).model_dump()


def _elr_plus_params(sweep: Sweep, method: str, noise: float) -> dict[str, Any]:
    return sweep.baselines.elr_plus.resolved(sweep.data.dataset).model_dump()


def _dividemix_params(sweep: Sweep, method: str, noise: float) -> dict[str, Any]:
    bs, dataset = sweep.baselines, sweep.data.dataset
    dm = bs.dividemix
    return {
        "warmup_epochs": dm.resolved_warmup(dataset),
        "alpha": dm.alpha,
        "T": dm.T,
        "p_threshold": dm.resolved_p_threshold(noise),
        "lambda_u": dm.resolved_lambda_u(dataset, noise),
        "rampup_epochs": dm.rampup_epochs,
        "average_losses": dm.averages_losses(noise),
        "average_losses_epochs": dm.average_losses_epochs,
        "mix_batch_size": dm.mix_batch_size or max(1, bs.batch_size // 2),
        "prior_penalty": dm.prior_penalty,
        "ensemble": dm.ensemble,
        "gmm_max_iter": dm.gmm_max_iter,
        "gmm_tol": dm.gmm_tol,
        "gmm_reg_covar": dm.gmm_reg_covar,
        "lr_decay_epoch": dm.resolved_lr_decay_epoch(),
    }


def _dividemix_epochs(bs: BaselineSettings) -> int | None:
    """Train_cifar.py's 300 epochs under the reference schedule."""
    return bs.dividemix.epochs if bs.dividemix.schedule == "reference" else None


#: every baseline by the name `baselines.methods` gives it, in the order of BASELINES
BASELINE_METHODS: dict[str, BaselineSpec] = {
    **{name: BaselineSpec(_loss_params) for name in SUPERVISED_LOSSES},
    "elr": BaselineSpec(_elr_params),
    "elr+": BaselineSpec(_elr_plus_params, networks=2, extra_forwards=1),
    "dividemix": BaselineSpec(
        _dividemix_params,
        networks=2,
        training_flops=dividemix_training_flops,
        epochs=_dividemix_epochs,
    ),
}
