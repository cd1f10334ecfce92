"""Single-stage baselines as units of the sweep: the plan's side and the worker's side.

`plan_baselines` expands `baselines.methods` over the same cells as the two-stage trials
(grid.gamma x grid.noise x grid.seeds x grid.data_seeds), one unit per (method, cell),
named by a content key of everything that determines its output. It imports no torch.
`run_baseline` trains one unit (resuming from its checkpoint in the cache), evaluates it on
the balanced clean test set and writes its one result row. Its training labels come from
`training_subset` and `noisy_labels` of `ltsweep.work`, the very calls `run_finetunes`
makes, so a baseline and a fine-tune trial of the same cell see the same noisy labels.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltsweep.sweep.baseline_settings import SUPERVISED, BaselineSettings

if TYPE_CHECKING:
    import numpy as np

    from ltsweep.data.noise import NoisyLabels
    from ltsweep.sweep.schema import Sweep
    from ltsweep.train.baselines.common import Outcome, TrainSet
    from ltsweep.units.pretrain import RunContext


def baseline_settings(sweep: Sweep) -> BaselineSettings:
    """The sweep's `baselines` block as a BaselineSettings, whether or not spec.py parsed it already."""
    raw = sweep.baselines
    if isinstance(raw, BaselineSettings):
        return raw
    return BaselineSettings(**(raw or {}))


@dataclass(frozen=True)
class BaselineUnit:
    key: str
    method: str  # ce | la | sl | la+sl | elr | dividemix
    dataset: str
    gamma: float
    data_seed: int
    noise: float
    noise_type: str
    seed: int
    epochs: int
    settings: dict[str, Any] = field(compare=False, hash=False)  # {"budget": ..., "params": ...}
    # noise_type cifar-n: {path, key, sha256} of the label file (its key and sha256 are in `key`)
    label_file: dict[str, str] | None = field(default=None, compare=False, hash=False)

    @property
    def stage(self) -> str:
        return "baseline"

    @property
    def loss(self) -> str:
        """The results table's loss column: the loss name, or the method's own name."""
        return self.method

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def method_params(sweep: Sweep, bs: BaselineSettings, method: str, noise: float) -> dict[str, Any]:
    """The method's own settings, resolved for the data set and noise rate of a cell.

    Only what changes the method's output goes in, so that changing, say, ELR's beta does
    not invalidate the CE units.
    """
    dataset = sweep.data.dataset
    if method in SUPERVISED:
        out: dict[str, Any] = {"loss": method}
        if method.startswith("la"):
            out["la_tau"] = sweep.loss.la_tau
        if method.endswith("sl"):
            out["sl_lambda"] = sweep.loss.sl_lambda
            out["sl_threshold"] = (
                sweep.loss.sl_threshold
                if sweep.loss.sl_threshold is not None
                else math.log(sweep.num_classes)
            )
        return out
    if method == "elr":
        return bs.elr.resolved(dataset).model_dump()
    if method == "dividemix":
        dm = bs.dividemix
        return {
            "warmup_epochs": dm.resolved_warmup(dataset),
            "alpha": dm.alpha,
            "T": dm.T,
            "p_threshold": dm.p_threshold,
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
        }
    raise ValueError(f"unknown baseline {method!r}")


def plan_baselines(sweep: Sweep) -> list[BaselineUnit]:
    """One unit per (baseline, gamma, noise, seed, data seed): the two-stage trials' cells."""
    from ltsweep.planning.plan import (  # here, not at the top: plan.py imports this module
        content_key,
        label_file,
        label_identity,
    )

    bs = baseline_settings(sweep)
    grid = sweep.grid
    data_id = sweep.data.identity()
    backbone = sweep.backbone.model_dump()
    budget = bs.budget()
    labels = label_file(sweep) if bs.methods else None
    units: dict[str, BaselineUnit] = {}
    for method, gamma, data_seed, noise, seed in product(
        bs.methods, grid.gamma, grid.data_seeds, grid.noise, grid.seeds
    ):
        settings = {"budget": budget, "params": method_params(sweep, bs, method, noise)}
        fields = {
            "method": method,
            "data": data_id,
            "backbone": backbone,
            "gamma": gamma,
            "data_seed": data_seed,
            "noise": noise,
            "noise_type": grid.noise_type,
            "seed": seed,
            "settings": settings,
        }
        if labels is not None:  # only then: keys of symmetric-noise sweeps stay as they were
            fields["noisy_labels"] = label_identity(labels)
        key = content_key("baseline", fields)
        units.setdefault(
            key,
            BaselineUnit(
                key=key,
                method=method,
                dataset=sweep.data.dataset,
                gamma=gamma,
                data_seed=data_seed,
                noise=noise,
                noise_type=grid.noise_type,
                seed=seed,
                epochs=bs.epochs,
                settings=settings,
                label_file=labels,
            ),
        )
    return list(units.values())


def checkpoint_dir(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "baseline" / key


def cell_labels(sweep: Sweep, unit: BaselineUnit) -> tuple[np.ndarray, np.ndarray, NoisyLabels]:
    """(subset index, clean labels, noisy labels) of the unit's cell: the fine-tune trials' calls."""
    from ltsweep.units.pretrain import dataset_for, noisy_labels, training_subset

    data = dataset_for(sweep)
    index = training_subset(data, unit.gamma, unit.data_seed)
    clean = data.train.labels[index]
    noisy = noisy_labels(
        clean, data.num_classes, unit.noise, unit.noise_type, unit.seed, index, unit.label_file
    )
    return index, clean, noisy


def train_unit(ctx: RunContext, unit: BaselineUnit, train: TrainSet) -> Outcome:
    """Train `unit` on `train` with its method's trainer (a seam tests can spy on)."""
    from ltsweep.device import pick_device
    from ltsweep.train.baselines.common import Backbone, Budget
    from ltsweep.train.baselines.dividemix import DivideMixParams, train_dividemix
    from ltsweep.train.baselines.elr import ELRParams, train_elr
    from ltsweep.train.baselines.supervised import LossParams, train_supervised
    from ltsweep.units.pretrain import dataset_for

    sweep = ctx.sweep
    data = dataset_for(sweep)
    device = pick_device(sweep.execution.device)
    backbone = Backbone(sweep.backbone.arch, sweep.backbone.width, data.stem)
    budget = Budget.of(unit.settings["budget"])
    params = unit.settings["params"]
    common = {
        "device": device,
        "checkpoint_dir": checkpoint_dir(ctx.cache_dir, unit.key),
        "seed": unit.seed,
        "checkpoint_every": baseline_settings(sweep).checkpoint_every,
        "amp": sweep.execution.amp,
    }
    if unit.method in SUPERVISED:
        return train_supervised(train, data.test, backbone, budget, LossParams(**params), **common)
    if unit.method == "elr":
        return train_elr(train, data.test, backbone, budget, ELRParams(**params), **common)
    if unit.method == "dividemix":
        return train_dividemix(
            train, data.test, backbone, budget, DivideMixParams(**params), **common
        )
    raise ValueError(f"unknown baseline {unit.method!r}")


def run_baseline(ctx: RunContext, unit: BaselineUnit) -> dict[str, Any]:
    """Train (or resume) one baseline, evaluate it and write its result row; return the row.

    A failure writes a `failed-baseline-<key>` row and a traceback under logs/, then re-raises,
    as `run_finetunes` does, so the driver can record and retry it.
    """
    import numpy as np

    from ltsweep.metrics import evaluate
    from ltsweep.store.results import write_rows
    from ltsweep.train.baselines.common import TrainSet
    from ltsweep.units.pretrain import dataset_for

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    name = f"baseline-{unit.key}"
    try:
        data = dataset_for(ctx.sweep)
        index, clean, noisy = cell_labels(ctx.sweep, unit)
        train = TrainSet(
            data.train, index, noisy.labels, clean, data.num_classes, data.mean, data.std
        )
        outcome = train_unit(ctx, unit, train)
        pred = outcome.test_logits.argmax(1).numpy()
        counts = np.bincount(clean, minlength=data.num_classes)
        metrics = evaluate(pred, np.asarray(data.test.labels), counts)
        row = _row(
            ctx,
            unit,
            metrics,
            noisy.actual_rate,
            len(index),
            time.perf_counter() - t0,
            started,
            **outcome.extra,
        )
    except Exception as err:  # noqa: BLE001 - a failed unit is recorded, never lost
        (ctx.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (ctx.run_dir / "logs" / f"{name}.error.txt").write_text(traceback.format_exc())
        row = _row(
            ctx,
            unit,
            {},
            math.nan,
            0,
            time.perf_counter() - t0,
            started,
            status="failed",
            error=f"{type(err).__name__}: {err}",
        )
        write_rows(ctx.results_dir, f"failed-{name}", [row])
        raise
    write_rows(ctx.results_dir, name, [row])
    return row


def _row(
    ctx: RunContext,
    u: BaselineUnit,
    metrics: dict[str, Any],
    actual_noise: float,
    n_train: int,
    seconds: float,
    started: str,
    clean_fraction: float = math.nan,
    clean_precision: float = math.nan,
    status: str = "ok",
    error: str = "",
) -> dict[str, Any]:
    from ltsweep.store.results import unit_row

    return unit_row(
        ctx.sweep.name,
        u,
        "single-stage",
        metrics,
        pretrain_key=None,
        head="",
        pretrain_epochs=0,
        actual_noise=actual_noise,
        n_train=n_train,
        knn_acc=math.nan,
        clean_fraction=clean_fraction,
        clean_precision=clean_precision,
        status=status,
        error=error,
        seconds=seconds,
        started=started,
    )
