"""The training data of one grid cell: the sweep's data set, its long-tailed subset, its labels.

A fine-tune trial and a single-stage baseline of the same cell (gamma, data seed, noise, seed)
train on the same samples and the same noisy labels because both come from here:
`training_subset` picks the samples, `noisy_labels` the labels. The data set is loaded once
per worker process (`dataset_for`), as is a real noisy-label file.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np

from ltsweep.data import load_dataset
from ltsweep.data.base import DataError, Dataset
from ltsweep.data.cifar_n import load_cifar_n_labels
from ltsweep.data.imbalance import long_tail_indices
from ltsweep.data.noise import NoisyLabels, symmetric_noise
from ltsweep.sweep.schema import DataSettings, Sweep


@functools.lru_cache(maxsize=2)
def _dataset(settings_json: str) -> Dataset:
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
