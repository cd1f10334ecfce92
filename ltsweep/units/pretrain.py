"""What a worker does for one unit of work; the driver only schedules these two functions.

`run_pretrain` trains (or resumes) the encoder and stores the frozen features of each
requested pre-train epoch; `run_finetunes` trains a group of fine-tune trials of one
pre-train together on those features and writes their result rows in one atomic file.
Neither knows about Ray, so both run the same in a test, a Tune trial or a SLURM job.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltsweep import __version__
from ltsweep.data import NoisyLabels, load_dataset, long_tail_indices, symmetric_noise
from ltsweep.data.base import DataError, Dataset
from ltsweep.device import pick_device, to_device
from ltsweep.knn import knn_accuracy
from ltsweep.metrics import evaluate
from ltsweep.planning.plan import FinetuneUnit, PretrainUnit
from ltsweep.store import cache as store
from ltsweep.store.atomic import write_json
from ltsweep.store.results import unit_row, write_rows
from ltsweep.sweep.schema import Sweep
from ltsweep.train.finetune import HeadSpec, Trial, train_stacked


@dataclass(frozen=True)
class RunContext:
    sweep: Sweep
    run_dir: Path
    cache_dir: Path

    @property
    def results_dir(self) -> Path:
        return self.run_dir / "results"


@functools.lru_cache(maxsize=2)
def _dataset(settings_json: str) -> Dataset:
    from ltsweep.sweep.schema import DataSettings

    return load_dataset(DataSettings.model_validate_json(settings_json))


def dataset_for(sweep: Sweep) -> Dataset:
    """The sweep's data set, loaded once per worker process."""
    return _dataset(sweep.data.model_dump_json())


def training_subset(data: Dataset, gamma: float, data_seed: int) -> np.ndarray:
    return long_tail_indices(data.train.labels, data.num_classes, gamma, data_seed)


def noisy_labels(
    clean: np.ndarray,
    num_classes: int,
    noise: float,
    noise_type: str,
    seed: int,
    index: np.ndarray | None = None,
    label_file: dict[str, str] | None = None,
) -> NoisyLabels:
    """The training labels of a fine-tune (or single-stage) cell: same seed, same labels.

    `clean` are the clean labels of the training subset. cifar-n: the labels of `label_file`
    ({path, key, sha256}, the unit's) at `index`, the subset's positions in the official
    training set; `noise` must be 0 (the file's labels are the noise) and `seed` is unused.
    """
    if noise_type == "symmetric":
        return symmetric_noise(clean, num_classes, noise, seed)
    if noise_type != "cifar-n":
        raise ValueError(f"unknown noise type {noise_type!r}")
    if index is None or label_file is None:
        raise ValueError("cifar-n noise needs the subset's original indices and the label file")
    if noise != 0:
        raise ValueError(
            f"cifar-n noise takes noise 0 (the file's labels are the noise), got {noise}"
        )
    path, key = label_file["path"], label_file["key"]
    every = _label_array(path, key, label_file.get("sha256"))
    index = np.asarray(index, dtype=np.int64)
    clean = np.asarray(clean, dtype=np.int64)
    if len(index) != len(clean):
        raise ValueError(f"{len(index)} indices for {len(clean)} clean labels")
    if len(index) and index.max() >= len(every):
        raise ValueError(
            f"{path}[{key!r}] has {len(every)} labels; the subset reaches {index.max()}"
        )
    labels = every[index]
    if len(labels) and labels.max() >= num_classes:
        raise ValueError(
            f"{path}[{key!r}] has label {labels.max()}, but the data set has {num_classes} classes"
        )
    return NoisyLabels(labels=labels, changed=labels != clean)


@functools.lru_cache(maxsize=4)
def _label_array(path: str, key: str, sha256: str | None) -> np.ndarray:
    """A label file's array, read once per worker; refused if the file changed since planning."""
    from ltsweep.data.cifar_n import load_cifar_n_labels

    if sha256 is not None:
        try:
            found = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as err:
            raise DataError(f"CIFAR-N labels: cannot read {path}: {err.strerror}") from None
        if found != sha256:
            raise DataError(
                f"CIFAR-N labels: {path} changed since the sweep was planned "
                f"(sha256 {found[:12]}, planned {sha256[:12]}); run the sweep again to re-plan"
            )
    labels = load_cifar_n_labels(Path(path), key)
    labels.setflags(write=False)
    return labels


def run_pretrain(ctx: RunContext, unit: PretrainUnit) -> dict[str, Any]:
    """Train (or resume) the encoder of `unit`, then store features of every requested epoch."""
    from ltsweep.augment import Normalize
    from ltsweep.models.resnet import build_encoder
    from ltsweep.train.selfsup.base import build_method
    from ltsweep.train.selfsup.loop import Batches, encode, pretrain

    sweep, ex = ctx.sweep, ctx.sweep.execution
    device = pick_device(ex.device)
    data = dataset_for(sweep)
    index = training_subset(data, unit.gamma, unit.data_seed)
    settings = sweep.ssl_settings(unit.method)
    torch.manual_seed(unit.data_seed)
    encoder = build_encoder(sweep.backbone.arch, sweep.backbone.width, data.stem)
    method = build_method(unit.method, encoder, settings)
    folder = store.pretrain_dir(ctx.cache_dir, unit.key)
    batches = Batches(data.train, index, data.test, data.num_classes, data.mean, data.std)
    t0 = time.perf_counter()
    if not store.pretrain_done(ctx.cache_dir, unit.key):
        state = pretrain(
            method,
            batches,
            settings,
            device,
            folder,
            seed=unit.data_seed,
            amp=ex.amp,
            keep_epochs=unit.feature_epochs,
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
                "n_train": len(index),
                "version": __version__,
            },
        )
    meta = store.read_pretrain_meta(ctx.cache_dir, unit.key)
    normalize = Normalize(data.mean, data.std, device)
    method.to(device)
    for epoch in unit.feature_epochs:
        if store.features_ready(ctx.cache_dir, unit.key, epoch):
            continue
        for part in ("encoder", "projector"):
            snapshot = folder / f"{part}-epoch{epoch:05d}.pt"
            if not snapshot.is_file():
                raise FileNotFoundError(f"{snapshot}: no snapshot kept at pre-train epoch {epoch}")
            getattr(method, part).load_state_dict(
                torch.load(snapshot, map_location=device, weights_only=True)
            )
        train_f = encode(method.encoder, data.train, index, normalize, device, amp=ex.amp)
        test_f = encode(
            method.encoder, data.test, np.arange(len(data.test)), normalize, device, amp=ex.amp
        )
        tensors = {
            "train": train_f.to(getattr(torch, ex.feature_dtype)),
            "test": test_f.to(getattr(torch, ex.feature_dtype)),
            "train_labels": torch.as_tensor(data.train.labels[index]),
            "test_labels": torch.as_tensor(data.test.labels),
            "train_index": torch.as_tensor(index),
            "knn_acc": torch.tensor(
                knn_accuracy(
                    train_f,
                    torch.as_tensor(data.train.labels[index]),
                    test_f,
                    torch.as_tensor(data.test.labels),
                    data.num_classes,
                    settings.knn_k,
                    settings.knn_temperature,
                )
            ),
        }
        if settings.finetune.head == "mlp":
            tensors |= {f"head.{k}": v.cpu() for k, v in method.head_init().items()}
        store.save_features(ctx.cache_dir, unit.key, epoch, tensors)
    return {"seconds": time.perf_counter() - t0, "epochs": meta["epochs"]}


@functools.lru_cache(maxsize=2)
def _features(cache: str, key: str, epoch: int, device: str) -> dict[str, Any]:
    raw = store.load_features(Path(cache), key, epoch)
    dev = torch.device(device)
    return {
        k: to_device(v, dev) if k in ("train", "test") or k.startswith("head.") else v
        for k, v in raw.items()
    }


def run_finetunes(
    ctx: RunContext, units: list[FinetuneUnit], file_name: str
) -> list[dict[str, Any]]:
    """Train `units` (one group: same pre-train, head and epochs) together; write their rows."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    first = units[0]
    device = pick_device(ctx.sweep.execution.device)
    try:
        feats = _features(
            str(ctx.cache_dir), first.pretrain_key, first.pretrain_epochs, str(device)
        )
        clean = feats["train_labels"].numpy()
        num_classes = ctx.sweep.num_classes
        counts = np.bincount(clean, minlength=num_classes)
        index = feats["train_index"].numpy()
        noisy = [
            noisy_labels(clean, num_classes, u.noise, u.noise_type, u.seed, index, u.label_file)
            for u in units
        ]
        trials = [
            Trial(
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
        preds = (
            train_stacked(
                feats["train"],
                feats["test"],
                num_classes,
                HeadSpec(first.head, first.epochs, first.batch_size),
                trials,
                head_init,
            )
            .cpu()
            .numpy()
        )
        test_labels = feats["test_labels"].numpy()
        knn = float(feats["knn_acc"])
        seconds = (time.perf_counter() - t0) / len(units)
        rows = [
            _row(
                ctx,
                u,
                evaluate(p, test_labels, counts),
                n.actual_rate,
                len(clean),
                knn,
                seconds,
                started,
            )
            for u, p, n in zip(units, preds, noisy, strict=True)
        ]
    except Exception as err:  # noqa: BLE001 - a failed group is recorded, never lost
        message = f"{type(err).__name__}: {err}"
        (ctx.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (ctx.run_dir / "logs" / f"{file_name}.error.txt").write_text(traceback.format_exc())
        rows = [
            _row(ctx, u, {}, math.nan, 0, math.nan, 0.0, started, status="failed", error=message)
            for u in units
        ]
        write_rows(ctx.results_dir, f"failed-{file_name}", rows)
        raise
    write_rows(ctx.results_dir, file_name, rows)
    return rows


def _row(
    ctx: RunContext,
    u: FinetuneUnit,
    metrics: dict[str, Any],
    actual_noise: float,
    n_train: int,
    knn: float,
    seconds: float,
    started: str,
    status: str = "ok",
    error: str = "",
) -> dict[str, Any]:
    return unit_row(
        ctx.sweep.name,
        u,
        "two-stage",
        metrics,
        pretrain_key=u.pretrain_key,
        head=u.head,
        pretrain_epochs=u.pretrain_epochs,
        actual_noise=actual_noise,
        n_train=n_train,
        knn_acc=knn,
        status=status,
        error=error,
        seconds=seconds,
        started=started,
    )
