"""The fine-tune unit: one head trained on the frozen features of a pre-train, and its row.

Key: one per (pre-train, pre-train epoch, noise, loss, head, seed), with every setting of the
fine-tune protocol (lr, epochs, batch, loss constants, feature dtype) and, for cifar-n noise,
the label file's content.
Needs: its pre-train's features at `pretrain_epochs` (`depends_on` names the pre-train).
Resources: `resources.finetune`.
Runs: in groups. Trials of one pre-train that share a head mode and epochs
(`group_key`) are one Tune trial and one stacked model (`ltsweep.train.finetune`), cut by
`finetune_groups` to the memory budget; a group writes its rows as one file, named by its
trials' keys (`group_name`), so running it twice rewrites the same file.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from itertools import product
from typing import Any, ClassVar

import numpy as np

from ltsweep.sweep import precision
from ltsweep.sweep.estimate import finetune_bytes
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
from ltsweep.units.pretrain import PretrainUnit

KIND = "finetune"


@dataclass(frozen=True)
class FinetuneUnit(RowUnit):
    pretrain_key: str
    pretrain_epochs: int
    loss: str
    head: str  # full | last | linear
    head_kind: str  # mlp | linear
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    la_tau: float
    sl_lambda: float
    sl_threshold: float
    feature_dtype: str

    kind: ClassVar[str] = KIND
    table_stage: ClassVar[str] = "two-stage"

    @property
    def depends_on(self) -> str:
        """The pre-train whose features this trial reads."""
        return self.pretrain_key

    def group_key(self) -> tuple[Any, ...]:
        """Trials with equal group keys can be trained together as one stacked model."""
        return (
            self.pretrain_key,
            self.pretrain_epochs,
            self.head,
            self.head_kind,
            self.epochs,
            self.batch_size,
            self.feature_dtype,
        )

    def own_columns(self) -> dict[str, Any]:
        return {
            "pretrain_key": self.pretrain_key,
            "head": self.head,
            "pretrain_epochs": self.pretrain_epochs,
        }


def resolve_head(kind: str, requested: str, noise: float, last_above: float | None) -> str:
    """The head mode a fine-tune trains: the paper switches to the last FC above a noise rate."""
    if kind == "linear":
        return "linear"
    if requested == "auto":
        return "last" if last_above is not None and noise > last_above else "full"
    return requested


def plan_finetunes(sweep: Sweep, pretrains: Iterable[PretrainUnit]) -> list[FinetuneUnit]:
    """Per pre-train, one trial per (pre-train epoch, noise, loss, head, seed) of the grid."""
    grid = sweep.grid
    labels = label_file(sweep)
    sl_threshold = sweep.resolved_sl_threshold()
    carried = {"label_file": labels, "sweep_name": sweep.name, **asks(resources(sweep))}
    units: dict[str, FinetuneUnit] = {}
    for pre in pretrains:
        ft = sweep.ssl_settings(pre.method).finetune
        for pe, noise, loss, head, seed in product(
            pre.feature_epochs, grid.noise, grid.losses, grid.head, grid.seeds
        ):
            mode = resolve_head(ft.head, head, cell_noise(noise, labels), ft.last_layer_above)
            fields = dict(
                pretrain_key=pre.key,
                pretrain_epochs=pe,
                method=pre.method,
                dataset=sweep.data.dataset,
                gamma=pre.gamma,
                data_seed=pre.data_seed,
                noise=noise,
                noise_type=grid.noise_type,
                loss=loss,
                head=mode,
                head_kind=ft.head,
                seed=seed,
                lr=ft.last_layer_lr if mode == "last" else ft.lr,
                weight_decay=ft.weight_decay,
                epochs=ft.epochs,
                batch_size=ft.batch_size,
                la_tau=sweep.loss.la_tau,
                sl_lambda=sweep.loss.sl_lambda,
                sl_threshold=sl_threshold,
                feature_dtype=sweep.execution.feature_dtype,
            )
            key = content_key(KIND, fields, labels)
            units.setdefault(key, FinetuneUnit(key=key, **carried, **fields))
    return list(units.values())


def finetune_groups(sweep: Sweep, units: Iterable[FinetuneUnit]) -> list[list[FinetuneUnit]]:
    """The driver's Tune trials of fine-tunes: as few as `execution` allows.

    One group per group key, cut at `max_group_size` trials and at as many as fit in
    `finetune_memory_gb` (`sweep.estimate.finetune_bytes` per trial); one trial each if
    `group_finetunes` is off.
    """
    ex = sweep.execution
    budget = ex.finetune_memory_gb * 2**30

    def size_of(u: FinetuneUnit) -> int:
        return max(1, min(ex.max_group_size, int(budget // finetune_bytes(sweep, u))))

    return group_finetunes(units, size_of, together=ex.group_finetunes)


def group_finetunes(
    units: Iterable[FinetuneUnit],
    max_size: int | Callable[[FinetuneUnit], int],
    together: bool = True,
) -> list[list[FinetuneUnit]]:
    """Split fine-tune trials into Tune trials: stacked by group key, at most `max_size` each.

    `max_size` may be a function of a group's first unit (all units of a group share what
    sizes it: head, epochs, batch, pre-train).

    A group is ordered by seed before it is cut, so a Tune trial holds whole runs of one seed:
    trials of a seed share their batches (see `ltsweep.train.finetune.lay_out`).
    """
    if not together:
        return [[u] for u in units]
    groups: dict[tuple[Any, ...], list[FinetuneUnit]] = {}
    for u in units:
        groups.setdefault(u.group_key(), []).append(u)
    out = []
    for members in groups.values():
        members.sort(key=lambda u: u.seed)  # stable: plan order within a seed
        size = max_size(members[0]) if callable(max_size) else max_size
        for s in range(0, len(members), size):
            out.append(members[s : s + size])
    return out


def group_name(units: list[FinetuneUnit]) -> str:
    """A stable file name for a group: the same trials always write the same file."""
    digest = hashlib.sha256("".join(sorted(u.key for u in units)).encode()).hexdigest()[:16]
    return f"ft-{units[0].pretrain_key[:8]}-{digest}"


def resources(sweep: Sweep) -> Resources:
    return sweep.resources.finetune


def config(units: list[FinetuneUnit]) -> dict[str, Any]:
    """The Tune config that runs one group (plain data: it crosses to a Ray worker)."""
    return {"kind": KIND, "name": group_name(units), "units": [asdict(u) for u in units]}


def run_config(ctx: RunContext, config: dict[str, Any]) -> None:
    run_finetunes(ctx, [FinetuneUnit(**u) for u in config["units"]], config["name"])


def failed_row(unit: FinetuneUnit, message: str, started: str = "", host: str | None = None) -> Row:
    """The row of a trial that failed (or was lost with its pre-train) before it had a result:
    all it needs is on the unit (its sweep's name too), so the driver can write it from a
    Tune config alone.

    `host`: the worker's node, when the trial ran (else the node writing the row)."""
    return unit.row(
        unit.sweep_name,
        {},
        actual_noise=math.nan,
        n_train=0,
        knn_acc=math.nan,
        status="failed",
        error=message,
        seconds=0.0,
        started=started,
        **({} if host is None else {"host": host}),
    )


def run_finetunes(ctx: RunContext, units: list[FinetuneUnit], file_name: str) -> list[Row]:
    """Train `units` (one group: same pre-train, head and epochs) together; write their rows."""
    # the worker's side: torch and the trainer load here, never when planning
    from ltsweep import gpu_memory
    from ltsweep.data.cell import noisy_labels
    from ltsweep.metrics import evaluate
    from ltsweep.placement import unit_device
    from ltsweep.train import finetune as stacked

    started, host = now(), worker_host()  # the rows name the node that computed them
    t0 = time.perf_counter()
    first = units[0]
    num_classes = ctx.sweep.num_classes

    def rows() -> list[Row]:
        ex = ctx.sweep.execution  # where the plan runs fine-tunes: from the settings alone
        cuda = precision.runs_on_cuda(ex, first.gpu)
        device = unit_device({"device_type": "cuda" if cuda else "cpu"}, ex.device)
        gpu_memory.cap_share(device, first.gpu)
        feats = stacked.stored_features(
            str(ctx.cache_dir), first.pretrain_key, first.pretrain_epochs, str(device)
        )
        clean = feats["train_labels"].numpy()
        index = feats["train_index"].numpy()
        noisy = [
            noisy_labels(clean, num_classes, u.noise, u.noise_type, u.seed, index, u.label_file)
            for u in units
        ]
        trials = [
            stacked.Trial(
                n.labels,
                u.loss,
                u.lr,
                u.weight_decay,
                u.seed,
                u.la_tau,
                u.sl_lambda,
                u.sl_threshold,
            )
            for u, n in zip(units, noisy, strict=True)
        ]
        head_init = {k[5:]: v for k, v in feats.items() if k.startswith("head.")} or None
        head = stacked.HeadSpec(first.head, first.epochs, first.batch_size)
        preds = stacked.train_stacked(
            feats["train"], feats["test"], num_classes, head, trials, head_init
        )
        test_labels = feats["test_labels"].numpy()
        counts = np.bincount(clean, minlength=num_classes)
        seconds = (time.perf_counter() - t0) / len(units)
        return [
            u.row(
                ctx.sweep.name,
                evaluate(p, test_labels, counts),
                actual_noise=n.actual_rate,
                n_train=len(clean),
                knn_acc=float(feats["knn_acc"]),
                seconds=seconds,
                started=started,
                host=host,
            )
            for u, p, n in zip(units, preds.cpu().numpy(), noisy, strict=True)
        ]

    def failed(message: str) -> list[Row]:
        return [failed_row(u, message, started, host) for u in units]

    return record_rows(ctx, file_name, rows, failed)
