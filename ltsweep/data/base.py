"""What every data set looks like to the rest of ltsweep.

A data set is two image sets (train, test) of uint8 images in NCHW order plus their labels.
Keeping images as uint8 until they reach the device keeps host memory and host->device
traffic four times smaller than float32, and lets augmentation run batched on the GPU.
Large data sets (Clothing1M) implement `ImageSet` lazily, decoding files on demand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch


class ImageSet(Protocol):
    """A sized collection of equally-shaped uint8 images with integer labels."""

    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int: ...

    def images(self, index: np.ndarray) -> torch.Tensor:
        """uint8 tensor (len(index), 3, H, W) of the images at `index`."""
        ...


@dataclass
class ArrayImageSet:
    """Images held in memory as one uint8 array (N, 3, H, W)."""

    array: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.array.dtype != np.uint8 or self.array.ndim != 4 or self.array.shape[1] != 3:
            raise ValueError(
                f"expected uint8 (N, 3, H, W) images, got {self.array.dtype} {self.array.shape}"
            )
        if len(self.labels) != len(self.array):
            raise ValueError(f"{len(self.array)} images but {len(self.labels)} labels")
        self.labels = np.asarray(self.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.array)

    def images(self, index: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.array[index]))


@dataclass
class Dataset:
    """A train/test pair with what the models need to know about it.

    `train_noisy_labels` is set by data sets that come with real noisy labels (Clothing1M);
    `train.labels` are then the only labels known for training as well.
    """

    name: str
    num_classes: int
    train: ImageSet
    test: ImageSet
    image_size: int
    stem: str = "cifar"  # "cifar" (3x3 conv, no max-pool) or "imagenet" (7x7/2 + max-pool)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    class_names: list[str] = field(default_factory=list)
    train_noisy_labels: np.ndarray | None = None


class DataError(RuntimeError):
    """A data root or file is missing or malformed; the message names the path."""
