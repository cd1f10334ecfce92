"""Symmetric label noise exactly as PROTOCOL.md defines it.

A fraction `rate` of the samples is chosen and each chosen sample gets a label drawn uniformly
from all C classes, possibly its own, so the expected flip rate is rate * (C - 1) / C. For one
seed the chosen samples of a lower rate are a prefix of those of a higher rate, so the noise
levels of a sweep are nested, which makes curves over noise less jagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoisyLabels:
    labels: np.ndarray  # (N,) int64 labels used for training
    changed: np.ndarray  # (N,) bool, True where labels differ from the clean labels

    @property
    def actual_rate(self) -> float:
        return float(self.changed.mean()) if len(self.changed) else 0.0


def symmetric_noise(clean: np.ndarray, num_classes: int, rate: float, seed: int) -> NoisyLabels:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"noise rate must be in [0, 1), got {rate}")
    clean = np.asarray(clean, dtype=np.int64)
    n = len(clean)
    rng = np.random.default_rng([seed, 0x5EED])
    order = rng.permutation(n)
    draws = rng.integers(0, num_classes, size=n)  # drawn for all samples: independent of rate
    chosen = order[: int(round(rate * n))]
    labels = clean.copy()
    labels[chosen] = draws[chosen]
    return NoisyLabels(labels=labels, changed=labels != clean)
