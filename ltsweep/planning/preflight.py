"""What `ltsweep run` checks in its own process before it writes anything.

Whatever a worker would only find out after scheduling (a data root without the data set, a
label file of the wrong length or with labels the data set does not have, a run folder that
cannot be written, a run folder that holds another sweep) is a `SpecError` of one line here,
and the run folder is left exactly as it was. Imports no torch and no ray (numpy reads the
label file).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ltsweep.sweep import precision
from ltsweep.sweep.base import SpecError, one_line, read_yaml
from ltsweep.sweep.schema import NUM_CLASSES, Sweep, check_data_root, parse_sweep
from ltsweep.units.baseline import resources as baseline_resources

#: what a data root must hold (relative paths), unless the data set is downloaded
LAYOUT = {
    "cifar10": [
        *(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
        "cifar-10-batches-py/test_batch",
        "cifar-10-batches-py/batches.meta",
    ],
    "cifar100": ["cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"],
    "clothing1m": [
        "noisy_label_kv.txt",
        "clean_label_kv.txt",
        "noisy_train_key_list.txt",
        "clean_test_key_list.txt",
        "category_names_eng.txt",
        "images",
    ],
}
#: what an ltsweep run folder holds (any of them: a folder a run or a submission started)
RUN_FOLDER_ENTRIES = {
    "sweep.yaml",
    "run.json",
    "results",
    "logs",
    "slurm.json",
    "driver.json",
    "driver.lock",
    ".ray-auth-token",
    "tune",
}
#: training images of the data sets whose label files are in the official training order
TRAIN_SIZE = {"cifar10": 50_000, "cifar100": 50_000}


def check_data(sweep: Sweep, source: str) -> None:
    """The data root holds the data set, and a label file fits it."""
    where = f"{source}: "
    check_data_root(sweep, source)
    dataset = sweep.data.dataset
    root = sweep.data.resolved_root()
    if root is not None and dataset in LAYOUT and not sweep.data.download:
        missing = [p for p in LAYOUT[dataset] if not (root / p).exists()]
        if missing:
            hint = " (or pass --download)" if dataset in ("cifar10", "cifar100") else ""
            raise SpecError(
                f"{where}data.root: {root} holds no {dataset} data set ({root / missing[0]} "
                f"is missing{', and ' + str(len(missing) - 1) + ' more' if len(missing) > 1 else ''})"
                + hint
            )
    labels = sweep.data.noisy_labels
    if labels is not None:
        check_label_values(labels.resolved_path(), labels.key, dataset, where)


def check_label_values(path: Path, key: str, dataset: str, where: str = "") -> None:
    """The label array `key` of `path` has one label per training image, each a class of it."""
    field = "data.noisy_labels"
    try:
        with np.load(path, allow_pickle=False) as archive:
            labels = archive[key]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise SpecError(f"{where}{field}.path: cannot read {path}: {one_line(str(err))}") from None
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise SpecError(
            f"{where}{field}.key: {path}[{key!r}] is not a list of integer labels "
            f"({labels.dtype}, shape {labels.shape})"
        )
    expected = TRAIN_SIZE.get(dataset)
    if expected is not None and len(labels) != expected:
        raise SpecError(
            f"{where}{field}: {path}[{key!r}] has {len(labels)} labels but {dataset} has "
            f"{expected} training images (a label file of another data set?)"
        )
    classes = NUM_CLASSES[dataset]
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        bad = int(labels.max()) if labels.max() >= classes else int(labels.min())
        raise SpecError(
            f"{where}{field}: {path}[{key!r}] has label {bad}, but {dataset} has {classes} "
            f"classes (0..{classes - 1}; a label file of another data set?)"
        )


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(path: Path, what: str) -> None:
    """`path` (a folder, made if missing) can be created and written by this user."""
    for sub in (path, path / "results") if what == "run folder" else (path,):
        if sub.exists():
            if not sub.is_dir():
                raise SpecError(f"{what}: {sub} exists and is not a folder")
            if not os.access(sub, os.W_OK | os.X_OK):
                raise SpecError(f"{what}: {sub} is not writable")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise SpecError(f"{what}: {base} is not a folder, so {path} cannot be made")
    if not os.access(base, os.W_OK | os.X_OK):
        raise SpecError(f"{what}: {base} is not writable, so {path} cannot be made")


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    return None if a == b else path or "(the whole file)"


def _comparable(sweep: Sweep) -> dict[str, Any]:
    dump = sweep.model_dump(mode="json")
    dump["data"].pop("download", None)  # how the data arrives, not what it is
    dump.pop("description", None)
    return dump


def check_run_folder(sweep: Sweep, run_dir: Path, sweep_path: str) -> None:
    """An existing run folder is run again only with the sweep it holds."""
    frozen = run_dir / "sweep.yaml"
    if not frozen.exists():
        if run_dir.is_dir():
            entries = {p.name for p in run_dir.iterdir()}
            if entries and not entries & RUN_FOLDER_ENTRIES:
                raise SpecError(
                    f"{run_dir}: exists, is not empty and is not a run folder (no sweep.yaml, "
                    "results/, logs/ or slurm.json); give another --run-dir"
                )
        return
    try:
        held = parse_sweep(read_yaml(frozen, "sweep file"), str(frozen))
    except SpecError as err:
        raise SpecError(
            f"{err} (this run folder's own copy of its sweep is damaged: restore it, or give "
            "another --run-dir)"
        ) from None
    diff = _first_difference(_comparable(held), _comparable(sweep))
    if diff is not None:
        raise SpecError(
            f"{run_dir}: holds sweep {held.name!r} run with other settings ({diff} differs from "
            f"{sweep_path}); to run this sweep give another --run-dir (the cache is shared, "
            f"nothing computed is lost), or move {run_dir} away to start it afresh"
        )


def unit_gpus(sweep: Sweep) -> dict[str, float]:
    """The unit kinds whose step `execution.precision` sets, with the GPUs each is given."""
    gpus = {"pre-train": sweep.resources.pretrain.gpu}
    if sweep.baselines.methods:
        gpus["baselines"] = baseline_resources(sweep).gpu
    return gpus


def check_precision(sweep: Sweep, source: str) -> None:
    """Every unit kind's precision can train on the device it is planned for (bf16 needs
    a GPU of capability 8.0+, fp16 needs CUDA): else one line naming execution.precision."""
    try:
        for gpus in unit_gpus(sweep).values():
            precision.resolve(sweep.execution, gpus)
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None
