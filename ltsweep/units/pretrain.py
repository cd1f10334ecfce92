"""The pre-train unit: self-supervised training of one encoder, and its stored features.

Key: one per (SSL method, data set, gamma, data seed, pre-train settings, backbone). Labels
are not used, so noise is not in the key.
Needs: nothing; fine-tunes need it (its features at each epoch in `feature_epochs`).
Resources: `resources.pretrain`.
Runs: trains (or resumes, from `<cache>/pretrain/<key>/last.pt`) the encoder with the
method's loss in the shared loop (`ltsweep.train.selfsup`), writes `meta.json` when done,
then stores the frozen features of every requested pre-train epoch
(`<cache>/features/<key>/epoch-NNNNN.pt`). It writes no result row: its fine-tunes do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import product
from typing import Any, ClassVar

from ltsweep.store import cache, curves
from ltsweep.store.atomic import write_json
from ltsweep.sweep import precision
from ltsweep.sweep.schema import Resources, Sweep
from ltsweep.units.base import RunContext, Unit, asks, content_key
from ltsweep.version import __version__

log = logging.getLogger("ltsweep.pretrain")

KIND = "pretrain"


@dataclass(frozen=True)
class PretrainUnit(Unit):
    epochs: int
    feature_epochs: tuple[int, ...]  # pre-train epochs whose features fine-tunes read
    settings: dict[str, Any] = field(compare=False, hash=False)

    kind: ClassVar[str] = KIND

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainUnit:
        return cls(**{**d, "feature_epochs": tuple(d["feature_epochs"])})


def plan_pretrains(sweep: Sweep) -> list[PretrainUnit]:
    """One unit per (SSL method, gamma, data seed) of the grid, in that order."""
    grid = sweep.grid
    data_id = sweep.data.identity()
    backbone = sweep.backbone.model_dump()
    gpus = sweep.resources.pretrain.gpu
    execution = precision.resolve(sweep.execution, gpus)  # the worker runs what this says
    units: dict[str, PretrainUnit] = {}
    for method, gamma, data_seed in product(grid.ssl, grid.gamma, grid.data_seeds):
        ssl = sweep.ssl_settings(method)
        train_settings = ssl.model_dump(exclude={"finetune"})
        key = content_key(
            KIND,
            {
                "method": method,
                "data": data_id,
                "backbone": backbone,
                "gamma": gamma,
                "data_seed": data_seed,
                "ssl": train_settings,
                **precision.key_fields(sweep.execution, gpus),
            },
        )
        feature_epochs = tuple(
            sorted({e for e in (grid.pretrain_epochs or [ssl.epochs]) if e <= ssl.epochs})
        )
        settings = {
            "data": data_id,
            "backbone": backbone,
            "ssl": train_settings,
            "execution": execution,
        }
        units.setdefault(
            key,
            PretrainUnit(
                key,
                method,
                sweep.data.dataset,
                gamma,
                data_seed,
                ssl.epochs,
                feature_epochs,
                settings,
                **asks(resources(sweep)),
            ),
        )
    return list(units.values())


def resources(sweep: Sweep) -> Resources:
    return sweep.resources.pretrain


def config(unit: PretrainUnit) -> dict[str, Any]:
    """The Tune config that runs `unit` (plain data: it crosses to a Ray worker)."""
    return {"kind": KIND, "unit": asdict(unit)}


def run_config(ctx: RunContext, config: dict[str, Any]) -> None:
    run_pretrain(ctx, PretrainUnit.from_dict(config["unit"]))


def curve_recorder(ctx: RunContext, unit: PretrainUnit) -> Callable[[Any], None]:
    """The pre-train loop's per-epoch hook: the curve to the cache, and to Tune as it happens
    (so `tensorboard --logdir RUN/tune` and `ltsweep status` follow a running pre-train).
    A resumed pre-train redoes the epochs after its checkpoint: their records are replaced."""
    _, records = curves.read_curve(ctx.cache_dir, unit.key)

    def on_epoch(state: Any) -> None:
        records[:] = [r for r in records if r["epoch"] < state.epoch]
        records.append(
            {
                "epoch": state.epoch,
                "loss": state.loss_history[-1],
                "knn_acc": dict(state.knn_history).get(state.epoch),
                "lr": state.lr,
                "seconds": state.seconds,  # training seconds so far (resumes included)
            }
        )
        curves.write_curve(ctx.cache_dir, unit.key, unit.epochs, records)
        if ctx.report is not None:
            ctx.report({f"pretrain/{k}": v for k, v in records[-1].items() if v is not None})

    return on_epoch


def run_pretrain(ctx: RunContext, unit: PretrainUnit) -> dict[str, Any]:
    """Train (or resume) the encoder of `unit`, then store features of every requested epoch."""
    # the worker's side: torch and the trainers load here, never when planning
    import torch

    from ltsweep import gpu_memory
    from ltsweep.data.cell import dataset_for, training_subset
    from ltsweep.device import Speed
    from ltsweep.models.resnet import build_encoder
    from ltsweep.placement import unit_device
    from ltsweep.train.selfsup.base import build_method
    from ltsweep.train.selfsup.features import snapshot_features
    from ltsweep.train.selfsup.loop import Batches, pretrain, snapshot_intact

    sweep, ex = ctx.sweep, ctx.sweep.execution
    device = unit_device(unit.settings.get("execution"), ex.device)
    gpu_memory.cap_share(device, unit.gpu)
    speed = Speed.of(unit.settings.get("execution"))
    data = dataset_for(sweep)
    index = training_subset(data, unit.gamma, unit.data_seed)
    settings = sweep.ssl_settings(unit.method)
    torch.manual_seed(unit.data_seed)
    encoder = build_encoder(sweep.backbone.arch, sweep.backbone.width, data.stem)
    method = build_method(unit.method, encoder, settings)
    folder = cache.pretrain_dir(ctx.cache_dir, unit.key)
    batches = Batches(
        data.train, index, data.test, data.num_classes, data.mean, data.std, data.image_size
    )
    t0 = time.perf_counter()
    missing = [
        e for e in unit.feature_epochs if not cache.features_ready(ctx.cache_dir, unit.key, e)
    ]
    if cache.pretrain_done(ctx.cache_dir, unit.key) and not all(
        snapshot_intact(folder, e) for e in missing
    ):
        # a kept encoder is lost: the pre-train makes it again (from its checkpoint, or anew)
        moved = cache.set_aside(folder / "meta.json")
        log.warning("%s: a kept snapshot is missing or damaged; record moved to %s", folder, moved)
    if not cache.pretrain_done(ctx.cache_dir, unit.key):
        state = pretrain(
            method,
            batches,
            settings,
            device,
            folder,
            seed=unit.data_seed,
            speed=speed,
            keep_epochs=unit.feature_epochs,
            on_epoch=curve_recorder(ctx, unit),
        )
        write_json(
            folder / "meta.json",
            {
                "key": unit.key,
                "method": unit.method,
                "settings": unit.settings,
                "epochs": state.epoch,
                "knn_history": state.knn_history,
                "loss_history": state.loss_history,
                "seconds": state.seconds,
                "precision": speed.precision,  # what the worker ran (the key says it too)
                "n_train": len(index),
                "version": __version__,
            },
        )
    meta = cache.read_pretrain_meta(ctx.cache_dir, unit.key)
    for epoch in unit.feature_epochs:
        if not cache.features_ready(ctx.cache_dir, unit.key, epoch):
            tensors = snapshot_features(
                method, folder, epoch, data, index, settings, device, speed, ex.feature_dtype
            )
            cache.save_features(ctx.cache_dir, unit.key, epoch, tensors)
    return {"seconds": time.perf_counter() - t0, "epochs": meta["epochs"]}
