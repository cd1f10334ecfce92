"""Data sets by name, their long-tailed subsets and noisy labels.

Owns the loaders (`digits`, `cifar`, `clothing1m`; each imported only when its data set is
used), `imbalance` and `noise` (the subset and the synthetic noise of a cell), `cifar_n`
(real noisy-label files) and `cell` (the samples and labels one grid cell trains on).

May import: numpy, torch, PIL, scikit-learn, `ltsweep.sweep` (the data settings).
"""

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


def load_dataset(settings) -> Dataset:  # settings: ltsweep.sweep.schema.DataSettings
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
