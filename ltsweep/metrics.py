"""Accuracy on the balanced test set, split by how many training samples a class had.

Many-shot: > 100 training samples, medium: 20..100, few: < 20 (PROTOCOL.md, Metrics); the
counts are those of the (imbalanced) training subset's clean labels.
"""

from __future__ import annotations

import math

import numpy as np


def class_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    correct = np.bincount(
        labels, weights=(pred == labels).astype(np.float64), minlength=num_classes
    )
    total = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / np.maximum(total, 1), np.nan)


def shot_accuracies(class_acc: np.ndarray, train_counts: np.ndarray) -> dict[str, float]:
    groups = {
        "acc_many": train_counts > 100,
        "acc_medium": (train_counts >= 20) & (train_counts <= 100),
        "acc_few": train_counts < 20,
    }
    out = {}
    for name, mask in groups.items():
        vals = class_acc[mask & ~np.isnan(class_acc)]
        out[name] = float(vals.mean()) if len(vals) else math.nan
    return out


def evaluate(pred: np.ndarray, labels: np.ndarray, train_counts: np.ndarray) -> dict[str, object]:
    """The result columns acc, acc_many, acc_medium, acc_few and class_acc."""
    num_classes = len(train_counts)
    ca = class_accuracy(pred, labels, num_classes)
    return {
        "acc": float((pred == labels).mean()),
        "class_acc": [float(x) for x in ca],
        **shot_accuracies(ca, train_counts),
    }
