"""Data sets by name, their long-tailed subsets and noisy labels.

Owns the loaders (`digits`, `cifar`, `clothing1m`, by name in `LOADERS`; each imported only
when its data set is used), `base` (what a data set is), `imbalance` and `noise` (the subset
and the synthetic noise of a cell), `cifar_n` (real noisy-label files) and `cell` (the
samples and labels one grid cell trains on).

May import: numpy, torch, PIL, scikit-learn, `ltsweep.sweep` (the data settings).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ltsweep.data.base import ArrayImageSet, DataError, Dataset, ImageSet
from ltsweep.data.imbalance import long_tail_counts, long_tail_indices
from ltsweep.data.noise import NoisyLabels, symmetric_noise

__all__ = [
    "ArrayImageSet",
    "Dataset",
    "DataError",
    "ImageSet",
    "LOADERS",
    "NoisyLabels",
    "load_dataset",
    "long_tail_counts",
    "long_tail_indices",
    "symmetric_noise",
]


def _root(settings) -> str:
    root = settings.resolved_root()
    if root is None:
        raise DataError(
            f"{settings.dataset} needs a data root: set data.root in the sweep file or LTSWEEP_DATA"
        )
    return root


def _digits(settings) -> Dataset:
    from ltsweep.data.digits import load_digits_dataset

    return load_digits_dataset(
        image_size=settings.image_size, test_per_class=settings.test_per_class
    )


def _cifar(settings) -> Dataset:
    root = _root(settings)
    from ltsweep.data.cifar import load_cifar

    return load_cifar(settings.dataset, root, download=settings.download)


def _clothing1m(settings) -> Dataset:
    root = _root(settings)
    from ltsweep.data.clothing1m import load_clothing1m

    return load_clothing1m(root, image_size=settings.image_size)


#: data set name (`data.dataset`, `ltsweep.sweep.schema.DATASETS`) -> its loader, which takes
#: the sweep's data settings; each loader imports its module only when its data set is used
LOADERS: dict[str, Callable[[Any], Dataset]] = {
    "digits": _digits,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "clothing1m": _clothing1m,
}


def load_dataset(settings) -> Dataset:  # settings: ltsweep.sweep.schema.DataSettings
    """Load the data set a sweep names; raise DataError naming the path when it is missing."""
    if settings.dataset not in LOADERS:
        raise DataError(f"unknown data set {settings.dataset!r}")
    return LOADERS[settings.dataset](settings)
