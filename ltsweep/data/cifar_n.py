"""Real human noisy labels for CIFAR (CIFAR-10N / CIFAR-100N, Wei et al., ICLR 2022).

The labels come as an `.npz` of uint8 arrays in the official CIFAR training order (keys such
as `worse_label`, `aggre_label`, `noisy_label`). They are loaded with allow_pickle=False, so a
swapped file can hold data but never code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ltsweep.data.base import DataError


def load_cifar_n_labels(path: Path, key: str, expected_len: int | None = None) -> np.ndarray:
    """Return the label array `key` of a CIFAR-N `.npz` as int64.

    `expected_len` (normally len of the CIFAR training set) guards against pairing the labels
    with the wrong data set: a length mismatch would otherwise only surface as wrong labels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CIFAR-N labels: {path} not found")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"CIFAR-N labels: {path} is not an .npz archive")
        with archive:
            available = sorted(archive.files)
            if key not in available:
                raise DataError(
                    f"CIFAR-N labels: {path} has no key {key!r} (available: {', '.join(available)})"
                )
            labels = archive[key]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"CIFAR-N labels: cannot read {path}: {e}") from e
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"CIFAR-N labels: {path}[{key!r}] should be a 1-D integer array, "
            f"found {labels.dtype} {labels.shape}"
        )
    if expected_len is not None and len(labels) != expected_len:
        raise DataError(
            f"CIFAR-N labels: {path}[{key!r}] has {len(labels)} labels, expected {expected_len}"
        )
    if len(labels) and labels.min() < 0:
        raise DataError(f"CIFAR-N labels: {path}[{key!r}] has negative labels")
    return labels.astype(np.int64)
