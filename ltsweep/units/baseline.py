"""The baseline unit: one single-stage network trained from scratch on a cell's noisy labels.

Key: one per (method, gamma, noise, seed, data seed), over the same cells as the two-stage
trials (grid.gamma x grid.noise x grid.seeds x grid.data_seeds), with the data, the backbone,
the training budget every baseline shares and the method's own settings resolved for the cell
(`method_params`), and, for cifar-n noise, the label file's content.
Needs: nothing.
Resources: `resources.baseline` (default: `resources.pretrain`, as a baseline trains a whole
network; a fraction of a GPU lets two or more share one).
Runs: trains (or resumes, from `<cache>/baseline/<key>/last.pt`) the method's network(s) on
the shared baseline loop (`ltsweep.train.baselines`), evaluates on the balanced clean test set
and writes its one result row, `baseline-<key>`. Its training labels come from
`ltsweep.data.cell`, the very calls a fine-tune trial of the same cell makes, so both see the
same noisy labels.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ltsweep.sweep import precision
from ltsweep.sweep.baseline_settings import BASELINE_METHODS
from ltsweep.sweep.schema import Resources, Sweep
from ltsweep.units.base import (
    Row,
    RowUnit,
    RunContext,
    asks,
    cell_noise,
    content_key,
    label_file,
    now,
    record_rows,
    worker_host,
)

if TYPE_CHECKING:  # the worker's types: torch-side modules, imported when a unit runs
    from ltsweep.data.noise import NoisyLabels
    from ltsweep.train.baselines.common import Outcome, TrainSet

KIND = "baseline"


@dataclass(frozen=True)
class BaselineUnit(RowUnit):
    epochs: int
    settings: dict[str, Any] = field(compare=False, hash=False)  # {"budget": ..., "params": ...}

    kind: ClassVar[str] = KIND
    table_stage: ClassVar[str] = "single-stage"

    @property
    def loss(self) -> str:
        """The results table's loss column: the loss name, or the method's own name."""
        return self.method

    def own_columns(self) -> dict[str, Any]:
        """No encoder and no head; DivideMix's division columns come with its result."""
        return {
            "pretrain_key": None,
            "head": "",
            "pretrain_epochs": 0,
            "knn_acc": math.nan,
            "clean_fraction": math.nan,
            "clean_precision": math.nan,
        }


def method_params(sweep: Sweep, method: str, noise: float) -> dict[str, Any]:
    """The method's own settings, resolved for the data set and noise rate of a cell.

    Only what changes the method's output goes in, so that changing, say, ELR's beta does
    not invalidate the CE units. Each method's entry of
    `ltsweep.sweep.baseline_settings.BASELINE_METHODS` says what they are.
    """
    if method not in BASELINE_METHODS:
        raise ValueError(f"unknown baseline {method!r}")
    return BASELINE_METHODS[method].params(sweep, method, noise)


def plan_baselines(sweep: Sweep) -> list[BaselineUnit]:
    """One unit per (baseline, gamma, data seed, noise, seed): the two-stage trials' cells."""
    bs = sweep.baselines
    grid = sweep.grid
    labels = label_file(sweep) if bs.methods else None
    identity = {"data": sweep.data.identity(), "backbone": sweep.backbone.model_dump()}
    gpus = resources(sweep).gpu
    identity |= precision.key_fields(sweep.execution, gpus)  # only when not the legacy one
    execution = precision.resolve(sweep.execution, gpus)  # the worker runs what this says
    units: dict[str, BaselineUnit] = {}
    for method, gamma, data_seed, noise, seed in product(
        bs.methods, grid.gamma, grid.data_seeds, grid.noise, grid.seeds
    ):
        params = method_params(sweep, method, cell_noise(noise, labels))
        budget = bs.budget(method)  # DivideMix's reference schedule has its own epochs
        settings = {"budget": budget, "params": params}
        cell = {"gamma": gamma, "data_seed": data_seed, "noise": noise, "seed": seed}
        cell |= {"method": method, "noise_type": grid.noise_type}
        key = content_key(KIND, {**identity, **cell, "settings": settings}, labels)
        unit = BaselineUnit(
            key,
            dataset=sweep.data.dataset,
            epochs=int(budget["epochs"]),
            settings={**settings, "execution": execution},
            label_file=labels,
            sweep_name=sweep.name,
            **asks(resources(sweep)),
            **cell,
        )
        units.setdefault(key, unit)
    return list(units.values())


def resources(sweep: Sweep) -> Resources:
    return sweep.resources.baseline


def config(unit: BaselineUnit) -> dict[str, Any]:
    """The Tune config that runs `unit` (plain data: it crosses to a Ray worker)."""
    return {"kind": KIND, "unit": asdict(unit)}


def run_config(ctx: RunContext, config: dict[str, Any]) -> None:
    run_baseline(ctx, BaselineUnit(**config["unit"]))


def checkpoint_dir(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / KIND / key


def cell_labels(sweep: Sweep, unit: BaselineUnit) -> tuple[np.ndarray, np.ndarray, NoisyLabels]:
    """(subset index, clean labels, noisy labels) of the unit's cell: the fine-tune trials' calls."""
    from ltsweep.data.cell import dataset_for, noisy_labels, training_subset  # torch: worker only

    data = dataset_for(sweep)
    index = training_subset(data, unit.gamma, unit.data_seed)
    clean = data.train.labels[index]
    noisy = noisy_labels(
        clean, data.num_classes, unit.noise, unit.noise_type, unit.seed, index, unit.label_file
    )
    return index, clean, noisy


def train_unit(ctx: RunContext, unit: BaselineUnit, train: TrainSet) -> Outcome:
    """Train `unit` on `train` with its method on the shared loop (a seam tests can spy on)."""
    # the worker's side: torch and the trainers load here, never when planning
    from ltsweep import gpu_memory
    from ltsweep.data.cell import dataset_for
    from ltsweep.device import Speed
    from ltsweep.placement import unit_device
    from ltsweep.train.baselines.common import Backbone, Budget
    from ltsweep.train.baselines.loop import fit
    from ltsweep.train.baselines.registry import build_baseline

    sweep = ctx.sweep
    data = dataset_for(sweep)
    method = build_baseline(unit.method, unit.settings["params"])
    device = unit_device(unit.settings.get("execution"), sweep.execution.device)
    gpu_memory.cap_share(device, unit.gpu)
    return fit(
        method,
        train,
        data.test,
        Backbone(sweep.backbone.arch, sweep.backbone.width, data.stem),
        Budget.of(unit.settings["budget"]),
        device,
        checkpoint_dir(ctx.cache_dir, unit.key),
        unit.seed,
        sweep.baselines.checkpoint_every,
        Speed.of(unit.settings.get("execution")),
    )


def run_baseline(ctx: RunContext, unit: BaselineUnit) -> Row:
    """Train (or resume) one baseline, evaluate it and write its result row; return the row.

    A failure writes a `failed-baseline-<key>` row and a traceback under logs/, then re-raises,
    as a fine-tune group does, so the driver can record and the next run retry it.
    """
    from ltsweep.data.cell import dataset_for  # torch: worker only
    from ltsweep.metrics import evaluate
    from ltsweep.train.baselines.common import TrainSet

    started, host = now(), worker_host()  # the row names the node that computed it
    t0 = time.perf_counter()

    def rows() -> list[Row]:
        data = dataset_for(ctx.sweep)
        index, clean, noisy = cell_labels(ctx.sweep, unit)
        train = TrainSet(
            data.train, index, noisy.labels, clean, data.num_classes, data.mean, data.std
        )
        outcome = train_unit(ctx, unit, train)
        pred = outcome.test_logits.argmax(1).numpy()
        counts = np.bincount(clean, minlength=data.num_classes)
        metrics = evaluate(pred, np.asarray(data.test.labels), counts)
        columns = {"actual_noise": noisy.actual_rate, "n_train": len(index), **outcome.extra}
        return [unit.row(ctx.sweep.name, metrics, **columns, **_timing(t0, started), host=host)]

    def failed(message: str) -> list[Row]:
        columns = {"actual_noise": math.nan, "n_train": 0, "status": "failed", "error": message}
        return [unit.row(ctx.sweep.name, {}, **columns, **_timing(t0, started), host=host)]

    (row,) = record_rows(ctx, f"{KIND}-{unit.key}", rows, failed)
    return row


def _timing(t0: float, started: str) -> dict[str, Any]:
    return {"seconds": time.perf_counter() - t0, "started": started}
