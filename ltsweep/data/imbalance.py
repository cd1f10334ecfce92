"""The exponential long-tail profile of PROTOCOL.md and the subsampling that applies it."""

from __future__ import annotations

import math

import numpy as np


def long_tail_counts(n_max: int, num_classes: int, gamma: float) -> list[int]:
    """Samples kept per class: floor(n_max * gamma ** (-c / (C - 1))) for class c = 0..C-1.

    gamma is the ratio of the largest to the smallest class; gamma = 1 keeps every class whole.
    """
    if gamma < 1:
        raise ValueError(f"gamma must be >= 1, got {gamma}")
    if num_classes < 2:
        return [n_max] * num_classes
    # The small epsilon keeps exact products such as 5000 * 100**-1 = 50 from flooring to 49.
    return [
        int(math.floor(n_max * gamma ** (-c / (num_classes - 1)) + 1e-9))
        for c in range(num_classes)
    ]


def long_tail_indices(labels: np.ndarray, num_classes: int, gamma: float, seed: int) -> np.ndarray:
    """Indices of a seeded long-tailed subset of `labels`, sorted ascending.

    n_max is the size of the smallest class in `labels`, so every class can supply its quota
    (for the balanced CIFAR training sets n_max is 5,000 or 500). Which samples of a class are
    kept is drawn with `seed`; the same seed always keeps the same samples.
    """
    labels = np.asarray(labels)
    present = np.bincount(labels, minlength=num_classes)
    counts = long_tail_counts(int(present.min()), num_classes, gamma)
    rng = np.random.default_rng(seed)
    keep = []
    for c, k in enumerate(counts):
        members = np.flatnonzero(labels == c)
        keep.append(rng.choice(members, size=k, replace=False) if k < len(members) else members)
    return np.sort(np.concatenate(keep)).astype(np.int64)
