"""A sweep file expanded into units of work, each named by a content key.

Two kinds of two-stage units:
- a pre-train: one per (SSL method, data set, gamma, data seed, pre-train settings). Labels
  are not used, so noise is not part of its key. It trains the encoder and stores the
  frozen features at each pre-train epoch that fine-tunes ask for;
- a fine-tune trial: one per (pre-train, pre-train epoch, noise, loss, head, seed). It reads
  those features and trains only the head.
The key is a hash of everything that determines a unit's output (and a format version),
never of where files live, so a unit done once (in any sweep sharing the cache) is found
again, and a changed setting never reuses a stale result. Imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from itertools import product
from typing import Any

from ltsweep.sweep.schema import SpecError, Sweep

#: bump when stored outputs change meaning, so old cache entries are not reused
FORMAT_VERSION = 1


def content_key(kind: str, fields: dict[str, Any]) -> str:
    blob = json.dumps(
        {"kind": kind, "format": FORMAT_VERSION, **fields}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class PretrainUnit:
    key: str
    method: str
    dataset: str
    gamma: float
    data_seed: int
    epochs: int
    feature_epochs: tuple[int, ...]  # pre-train epochs whose features fine-tunes read
    settings: dict[str, Any] = field(compare=False, hash=False)

    @property
    def stage(self) -> str:
        return "pretrain"


@dataclass(frozen=True)
class FinetuneUnit:
    key: str
    pretrain_key: str
    pretrain_epochs: int
    method: str
    dataset: str
    gamma: float
    data_seed: int
    noise: float
    noise_type: str
    loss: str
    head: str  # full | last | linear
    head_kind: str  # mlp | linear
    seed: int
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    la_tau: float
    sl_lambda: float
    sl_threshold: float
    feature_dtype: str
    # noise_type cifar-n: {path, key, sha256} of the label file (its key and sha256 are in `key`)
    label_file: dict[str, str] | None = field(default=None, compare=False, hash=False)

    @property
    def stage(self) -> str:
        return "finetune"

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    sweep: Sweep
    pretrains: list[PretrainUnit]
    finetunes: list[FinetuneUnit]
    baselines: list[Any] = field(default_factory=list)

    def pretrain(self, key: str) -> PretrainUnit:
        return self._by_key[key]

    def __post_init__(self) -> None:
        self._by_key = {p.key: p for p in self.pretrains}


def resolve_head(kind: str, requested: str, noise: float, last_above: float | None) -> str:
    """The head mode a fine-tune trains: the paper switches to the last FC above a noise rate."""
    if kind == "linear":
        return "linear"
    if requested == "auto":
        return "last" if last_above is not None and noise > last_above else "full"
    return requested


def label_file(sweep: Sweep) -> dict[str, str] | None:
    """{path, key, sha256} of the real noisy labels a cifar-n sweep trains on; None otherwise.

    Content keys take the key and the sha256, not the path (keys never hold paths); units
    carry the absolute path so that a worker in another directory reads the same file.
    """
    labels = sweep.data.noisy_labels
    if sweep.grid.noise_type == "symmetric" or labels is None:
        return None
    path = labels.resolved_path()
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise SpecError(f"data.noisy_labels.path: cannot read {path}: {err.strerror}") from None
    return {"path": str(path), "key": labels.key, "sha256": digest}


def label_identity(labels: dict[str, str] | None) -> dict[str, str] | None:
    """What of a label file goes into content keys: which array, and the file's content."""
    return None if labels is None else {"key": labels["key"], "sha256": labels["sha256"]}


def make_plan(sweep: Sweep) -> Plan:
    grid = sweep.grid
    data_id = sweep.data.identity()
    labels = label_file(sweep)
    backbone = sweep.backbone.model_dump()
    pretrains: dict[str, PretrainUnit] = {}
    finetunes: dict[str, FinetuneUnit] = {}
    num_classes = sweep.num_classes
    sl_threshold = (
        sweep.loss.sl_threshold if sweep.loss.sl_threshold is not None else math.log(num_classes)
    )

    for method, gamma, data_seed in product(grid.ssl, grid.gamma, grid.data_seeds):
        ssl = sweep.ssl_settings(method)
        ft = ssl.finetune
        train_settings = ssl.model_dump(exclude={"finetune"})
        pkey = content_key(
            "pretrain",
            {
                "method": method,
                "data": data_id,
                "backbone": backbone,
                "gamma": gamma,
                "data_seed": data_seed,
                "ssl": train_settings,
            },
        )
        feature_epochs = tuple(
            sorted({e for e in (grid.pretrain_epochs or [ssl.epochs]) if e <= ssl.epochs})
        )
        pretrains[pkey] = PretrainUnit(
            pkey,
            method,
            sweep.data.dataset,
            gamma,
            data_seed,
            ssl.epochs,
            feature_epochs,
            {"data": data_id, "backbone": backbone, "ssl": train_settings},
        )
        for pe, noise, loss, head, seed in product(
            feature_epochs, grid.noise, grid.losses, grid.head, grid.seeds
        ):
            mode = resolve_head(ft.head, head, noise, ft.last_layer_above)
            fields = dict(
                pretrain_key=pkey,
                pretrain_epochs=pe,
                method=method,
                dataset=sweep.data.dataset,
                gamma=gamma,
                data_seed=data_seed,
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
            if labels is not None:  # only then: keys of symmetric-noise sweeps stay as they were
                key = content_key("finetune", {**fields, "noisy_labels": label_identity(labels)})
            else:
                key = content_key("finetune", fields)
            finetunes.setdefault(key, FinetuneUnit(key=key, label_file=labels, **fields))
    return Plan(sweep, list(pretrains.values()), list(finetunes.values()))


def finetune_groups(sweep: Sweep, units: Iterable[FinetuneUnit]) -> list[list[FinetuneUnit]]:
    """The driver's Tune trials of fine-tunes: as few as `execution` allows.

    One group per group key, cut at `max_group_size` trials and at as many as fit in
    `finetune_memory_gb` (`estimate.finetune_bytes` per trial); one trial each if
    `group_finetunes` is off.
    """
    from ltsweep.sweep.estimate import finetune_bytes

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
    trials of a seed share their batches (see `ltsweep.finetune.lay_out`).
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
