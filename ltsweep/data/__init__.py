"""Data sets by name. Each loader lives in its own module and is imported only when used."""

from __future__ import annotations

from ltsweep.data.base import ArrayImageSet, DataError, Dataset, ImageSet
from ltsweep.data.imbalance import long_tail_counts, long_tail_indices
from ltsweep.data.noise import NoisyLabels, symmetric_noise

__all__ = [
    "ArrayImageSet",
    "Dataset",
    "DataError",
    "ImageSet",
    "NoisyLabels",
    "load_dataset",
    "long_tail_counts",
    "long_tail_indices",
    "symmetric_noise",
]


def load_dataset(settings) -> Dataset:  # settings: ltsweep.spec.DataSettings
    """Load the data set a sweep names; raise DataError naming the path when it is missing."""
    name = settings.dataset
    if name == "digits":
        from ltsweep.data.digits import load_digits_dataset

        return load_digits_dataset(
            image_size=settings.image_size, test_per_class=settings.test_per_class
        )
    root = settings.resolved_root()
    if root is None:
        raise DataError(
            f"{name} needs a data root: set data.root in the sweep file or LTSWEEP_DATA"
        )
    if name in ("cifar10", "cifar100"):
        from ltsweep.data.cifar import load_cifar

        return load_cifar(name, root, download=settings.download)
    if name == "clothing1m":
        from ltsweep.data.clothing1m import load_clothing1m

        return load_clothing1m(root, image_size=settings.image_size)
    raise DataError(f"unknown data set {name!r}")
