"""CIFAR-10 / CIFAR-100 from their standard on-disk layouts, read without trusting pickle.

The official CIFAR files are Python pickles. A plain `pickle.load` runs whatever callable a
file names, so anyone who can swap a file under data.root could run code in every trial.
`_CifarUnpickler` therefore resolves only the few globals the genuine files need to rebuild
numpy arrays and refuses everything else with a DataError naming the file.

Globals referenced by the files (checked with `pickletools`):
  * official release (written by Python 2 / numpy 1): `numpy.core.multiarray._reconstruct`,
    `numpy.ndarray`, `numpy.dtype`;
  * copies re-written by Python 3 with protocol 2 (e.g. shared/data/cifar10/build_layout.py,
    numpy 2): `numpy._core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`, and
    `_codecs.encode` (how protocol 2 spells a bytes object); only its 'latin1' form is allowed.

Keys are bytes in the official files (decoded with encoding="bytes") and str in Python 3
copies; both are accepted. Nothing is cached on disk. Downloading is opt-in (`download=True`):
torchvision's downloader only fetches and extracts the archive, the reading is ours.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ltsweep.data.base import ArrayImageSet, DataError, Dataset


@dataclass(frozen=True)
class _Layout:
    name: str  # cifar10 | cifar100
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str  # labels | fine_labels; the class names are under label_names | fine_label_names
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def names_key(self) -> str:
        return self.label_key.removesuffix("s") + "_names"

    @property
    def torchvision_class(self) -> str:
        return self.name.upper()

    def files(self) -> tuple[str, ...]:
        return (*self.train_files, self.test_file, self.meta_file)


_BATCHES_10 = tuple(f"data_batch_{i}" for i in range(1, 6))
#: data set -> (folder, training files, test file, meta file, label key, classes)
_FILES = {
    "cifar10": ("cifar-10-batches-py", _BATCHES_10, "test_batch", "batches.meta", "labels", 10),
    "cifar100": ("cifar-100-python", ("train",), "test", "meta", "fine_labels", 100),
}
# Per-channel mean/std of the training images as fractions of 1 (the exact population std,
# not the often-copied (0.2023, 0.1994, 0.2010), which is a per-image std averaged).
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_LAYOUTS = {name: _Layout(name, *_FILES[name], *_STATS[name]) for name in _FILES}


def _numpy_reconstruct() -> Any:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """`_codecs.encode` restricted to the one use protocol 2 makes of it: bytes as latin1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(
            f"_codecs.encode only allowed as (str, 'latin1'), got {encoding!r}"
        )
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy's array-reconstruction globals."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path
        reconstruct = _numpy_reconstruct()
        self._allowed: dict[tuple[str, str], Any] = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _latin1_encode,
        }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._path}: refusing to load {module}.{name} from this pickle "
                "(CIFAR files may only reference numpy's array reconstruction)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._path}: refusing persistent id {pid!r} in this pickle")


def read_cifar_pickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle safely; return its top-level dict with str keys."""
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except Exception as e:  # truncated/corrupt files raise many different types
        raise DataError(f"{path}: not a readable CIFAR pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, found {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _field(batch: dict[str, Any], key: str, path: Path) -> Any:
    if key not in batch:
        raise DataError(f"{path}: no {key!r} entry (found {sorted(map(str, batch))})")
    return batch[key]


def _read_batch(path: Path, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    batch = read_cifar_pickle(path)
    data = _field(batch, "data", path)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or (data.shape[1] != 3 * 32 * 32)
    ):
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' should be uint8 (N, 3072), found {desc}")
    try:
        labels = np.asarray(_field(batch, layout.label_key, path), dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: {layout.label_key!r} is not a list of integers ({e})") from e
    if len(labels) != len(data):
        raise DataError(
            f"{path}: {len(data)} images but {len(labels)} {layout.label_key!r} entries"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise DataError(
            f"{path}: labels outside 0..{layout.num_classes - 1} "
            f"(min {labels.min()}, max {labels.max()})"
        )
    # Rows are already channel-major (1024 R, 1024 G, 1024 B), row-major within a channel.
    return data.reshape(-1, 3, 32, 32), labels


def _read_names(path: Path, layout: _Layout) -> list[str]:
    names = _field(read_cifar_pickle(path), layout.names_key, path)
    if not isinstance(names, list | tuple) or len(names) != layout.num_classes:
        raise DataError(
            f"{path}: {layout.names_key!r} should list {layout.num_classes} class names"
        )
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _missing(name: str, root: Path, layout: _Layout) -> DataError | None:
    hint = (
        f"expected the standard '{layout.folder}' layout under data.root {root}; "
        "pass --download to fetch it"
    )
    if not root.is_dir():
        return DataError(f"{name}: data.root {root} does not exist ({hint})")
    for f in layout.files():
        p = root / layout.folder / f
        if not p.is_file():
            return DataError(f"{name}: {p} not found ({hint})")
    return None


def _fetch(name: str, root: Path) -> None:
    """Download and extract the official archive into root (only when asked to)."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    # The class attributes give the official URL and archive checksum; we do not construct
    # the torchvision data set, because that would unpickle the files without restriction.
    cls = getattr(tvd, _LAYOUTS[name].torchvision_class)
    root.mkdir(parents=True, exist_ok=True)
    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except Exception as e:
        raise DataError(f"{name}: download of {cls.url} into {root} failed: {e}") from e


def load_cifar(name: str, root: Path, download: bool = False) -> Dataset:
    """Load CIFAR-10 or CIFAR-100 (fine labels) from `root`, in the official sample order.

    Never downloads unless `download` is true, so a wrong data.root fails fast instead of
    silently fetching 160 MB in every trial.
    """
    if name not in _LAYOUTS:
        raise DataError(f"unknown CIFAR data set {name!r} (expected one of {sorted(_LAYOUTS)})")
    layout = _LAYOUTS[name]
    root = Path(root)
    error = _missing(name, root, layout)
    if error is not None and download:
        _fetch(name, root)
        error = _missing(name, root, layout)
    if error is not None:
        raise error

    folder = root / layout.folder
    parts = [_read_batch(folder / f, layout) for f in layout.train_files]
    train_x = np.concatenate([x for x, _ in parts]) if len(parts) > 1 else parts[0][0]
    train_y = np.concatenate([y for _, y in parts])
    test_x, test_y = _read_batch(folder / layout.test_file, layout)
    return Dataset(
        name=name,
        num_classes=layout.num_classes,
        train=ArrayImageSet(np.ascontiguousarray(train_x), train_y),
        test=ArrayImageSet(np.ascontiguousarray(test_x), test_y),
        image_size=32,
        stem="cifar",
        mean=layout.mean,
        std=layout.std,
        class_names=_read_names(folder / layout.meta_file, layout),
    )
