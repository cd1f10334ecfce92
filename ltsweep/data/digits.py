"""The embedded default data set: scikit-learn's bundled 8x8 digits, upsampled.

It ships inside the scikit-learn wheel, so `ltsweep run sweeps/smoke.yaml` works on a fresh
machine with nothing to download. A stratified, balanced test split of `test_per_class`
images per class is held out; the rest is the (balanced) training pool.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ltsweep.data.base import ArrayImageSet, Dataset


def load_digits_dataset(
    image_size: int = 32, test_per_class: int = 40, split_seed: int = 0
) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # (N,1,8,8) in [0,1]
    if image_size != 8:
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False
        )
    array = (images.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1).numpy()
    labels = bunch.target.astype(np.int64)

    rng = np.random.default_rng(split_seed)
    test_idx = np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), size=test_per_class, replace=False)
            for c in range(10)
        ]
    )
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    return Dataset(
        name="digits",
        num_classes=10,
        train=ArrayImageSet(array[~is_test], labels[~is_test]),
        test=ArrayImageSet(array[is_test], labels[is_test]),
        image_size=image_size,
        stem="cifar",
        mean=(0.19, 0.19, 0.19),
        std=(0.33, 0.33, 0.33),
        class_names=[str(c) for c in range(10)],
    )
