"""Clothing1M (Xiao et al., CVPR 2015) from its official release layout, decoded lazily.

Layout under root:
  images/<a>/<bb>/<name>.jpg     the images (keys below are paths relative to root)
  noisy_label_kv.txt             `<key> <label>` for ~1M images (web-crawled, noisy)
  clean_label_kv.txt             `<key> <label>` for the human-checked images
  noisy_train_key_list.txt       the 1M training keys
  clean_test_key_list.txt        the 10,526 clean test keys
  category_names_eng.txt         the 14 class names, one a line
(`clean_val_key_list.txt` and `clean_train_key_list.txt` are part of the release but unused.)

Train = the noisy_train keys with their noisy labels, which are also `train_noisy_labels`: the
paper trains on the noisy labels only. Some training keys also appear in clean_label_kv.txt;
we ignore those clean labels on purpose (none is known for the rest, so using them would
make the training noise depend on an accident of the release). Test = the clean_test keys with
their clean labels.

Images stay on disk: a million decoded 224x224 images would take 150 GB. `FileImageSet`
decodes a batch on demand in a thread pool (Pillow releases the GIL while decoding) of as many
threads as the CPUs the process was given (`decode_threads`: Ray sets OMP_NUM_THREADS to a
unit's CPUs), decided where it decodes, not where the data set was loaded; the training loops
read the next batch while a step runs (`ltsweep.train.batches.TrainImages`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ltsweep.data.base import DataError, Dataset

NUM_CLASSES = 14
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode_threads() -> int:
    """The CPUs this process was given: OMP_NUM_THREADS (Ray sets it to the unit's CPUs),
    else the CPUs it may run on."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resize_for(size: int) -> int:
    """Shorter side before the center crop: 256 for 224 crops, the same ratio otherwise."""
    return max(size, round(size * 256 / 224))


def decode_image(path: str, size: int, draft: bool = True, crop: int | None = None) -> np.ndarray:
    """Decode one file as uint8 (3, c, c): shorter side to resize_for(size), center crop c.

    c = `crop`, default `size` (224 of 256: the test images). The SSL views are cropped from
    c = resize_for(size) instead (`FileImageSet.view_images`).

    Follows torchvision's Resize (bilinear) + CenterCrop arithmetic exactly when `draft` is
    false. With `draft`, libjpeg decodes large JPEGs at 1/2, 1/4 or 1/8 scale (never below the
    resize target) before the resize: about 1.5-2x faster on photos over twice the target size,
    at a mean difference of 1-3 / 255 from the full-resolution path; small images are
    unaffected.
    """
    short = resize_for(size)
    out = size if crop is None else crop
    try:
        with Image.open(path) as im:
            if draft:
                im.draft("RGB", (short, short))
            im = im.convert("RGB")
            w, h = im.size
            if w <= h:
                ow, oh = short, int(short * h / w)
            else:
                ow, oh = int(short * w / h), short
            if (ow, oh) != (w, h):
                im = im.resize((ow, oh), Image.Resampling.BILINEAR)
            top = int(round((oh - out) / 2.0))
            left = int(round((ow - out) / 2.0))
            im = im.crop((left, top, left + out, top + out))
            array = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # missing/unreadable/truncated
        raise DataError(f"clothing1m: cannot decode {path}: {e}") from e
    return array.transpose(2, 0, 1)


class FileImageSet:
    """Images decoded from files on demand; an `ImageSet`.

    Every image is resized (shorter side) and center-cropped to `size`, for train and test
    alike. The training set's random crop and flip are applied later by the batched
    augmentation on the device; `train` only records which split this is.
    `draft` is passed to `decode_image` (fast reduced-scale JPEG decoding).
    Paths are held as one numpy bytes array (compact, quick to pickle to Ray workers); the
    thread pool is created on first use and not pickled. `workers`: decoding threads; None
    (default) sizes it where it decodes, to the CPUs that process was given.
    """

    #: decoded on demand: a training loop reads the next batch ahead (`TrainImages`)
    prefetch = True

    def __init__(
        self,
        paths: list[str] | list[Path] | np.ndarray,
        labels: np.ndarray,
        size: int,
        train: bool,
        *,
        draft: bool = True,
        workers: int | None = None,
    ) -> None:
        self.paths = np.asarray([os.fsencode(p) for p in paths], dtype=np.bytes_)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        self.size = int(size)
        self.train = bool(train)
        self.draft = bool(draft)
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

    @property
    def workers(self) -> int:
        return getattr(self, "_workers", None) or decode_threads()

    def path(self, i: int) -> str:
        return os.fsdecode(self.paths[i])

    def _decode(self, path: str) -> np.ndarray:
        return decode_image(path, self.size, self.draft)

    def _decode_view_source(self, path: str) -> np.ndarray:
        return decode_image(path, self.size, self.draft, crop=resize_for(self.size))

    def images(self, index: np.ndarray) -> torch.Tensor:
        return self._batch(index, self.size, self._decode)

    def view_images(self, index: np.ndarray) -> torch.Tensor:
        """What the SSL views are cropped from: the 256 x 256 centre square of the image
        resized to a shorter side of 256 (for 224 views), i.e. the whole of its shorter side,
        not the 224 test crop. The ImageNet recipes crop from the full image; a batch needs
        one shape, so the longer side's margins stay out."""
        return self._batch(index, resize_for(self.size), self._decode_view_source)

    def _batch(self, index: np.ndarray, side: int, decode) -> torch.Tensor:
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        out = np.empty((len(index), 3, side, side), dtype=np.uint8)
        if len(index) == 0:
            return torch.from_numpy(out)
        paths = [self.path(i) for i in index]
        if len(paths) == 1 or self.workers == 1:
            arrays = [decode(p) for p in paths]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clothing1m")
            arrays = list(self._pool.map(decode, paths))
        for k, a in enumerate(arrays):
            out[k] = a
        return torch.from_numpy(out)


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DataError(
            f"clothing1m: {path} not found (expected the official Clothing1M release layout "
            f"under data.root {path.parent})"
        )
    return path


def _read_keys(path: Path) -> list[str]:
    return _need(path).read_text(encoding="utf-8").split()


def _read_kv(path: Path) -> dict[str, int]:
    """Parse `<key> <label>` lines fast (the noisy file has ~1M lines)."""
    tokens = _need(path).read_text(encoding="utf-8").split()
    try:
        if len(tokens) % 2:
            raise ValueError("odd number of fields")
        labels = np.array(tokens[1::2], dtype=np.int64)
    except ValueError:
        raise _bad_line(path) from None
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"clothing1m: {path}: labels outside 0..{NUM_CLASSES - 1}")
    return dict(zip(tokens[0::2], labels.tolist(), strict=True))


def _bad_line(path: Path) -> DataError:
    """Slow path, only on error: find the first malformed line to name it."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if fields and (len(fields) != 2 or not fields[1].lstrip("-").isdigit()):
                return DataError(
                    f"clothing1m: {path} line {n}: expected '<key> <label>', got {line.strip()!r}"
                )
    return DataError(f"clothing1m: {path}: malformed '<key> <label>' lines")


def _labels_for(keys: list[str], kv: dict[str, int], keys_file: Path, kv_file: Path) -> np.ndarray:
    try:
        return np.fromiter((kv[k] for k in keys), dtype=np.int64, count=len(keys))
    except KeyError as e:
        missing = sum(k not in kv for k in keys)
        raise DataError(
            f"clothing1m: {missing} keys of {keys_file} have no label in {kv_file} "
            f"(first: {e.args[0]})"
        ) from None


def load_clothing1m(root: Path, image_size: int = 224) -> Dataset:
    """Load Clothing1M's noisy training set and clean test set; images decode lazily."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"clothing1m: data.root {root} does not exist (expected the official Clothing1M "
            "release layout: images/, noisy_label_kv.txt, clean_label_kv.txt, ...)"
        )
    if not (root / "images").is_dir():
        raise DataError(f"clothing1m: {root / 'images'} not found (the image folder)")
    names_file = _need(root / "category_names_eng.txt")
    names = [n.strip() for n in names_file.read_text(encoding="utf-8").splitlines() if n.strip()]
    if len(names) != NUM_CLASSES:
        raise DataError(f"clothing1m: {names_file} lists {len(names)} names, expected 14")

    splits = {}
    for split, keys_name, kv_name in (
        ("train", "noisy_train_key_list.txt", "noisy_label_kv.txt"),
        ("test", "clean_test_key_list.txt", "clean_label_kv.txt"),
    ):
        keys_file, kv_file = root / keys_name, root / kv_name
        keys = _read_keys(keys_file)
        if not keys:
            raise DataError(f"clothing1m: {keys_file} is empty")
        labels = _labels_for(keys, _read_kv(kv_file), keys_file, kv_file)
        # Spot-check one file so a wrong root fails now, not deep inside training.
        if not (root / keys[0]).is_file():
            raise DataError(f"clothing1m: {root / keys[0]} (first key of {keys_file}) not found")
        paths = [os.path.join(root, k) for k in keys]
        splits[split] = FileImageSet(paths, labels, image_size, train=split == "train")

    return Dataset(
        name="clothing1m",
        num_classes=NUM_CLASSES,
        train=splits["train"],
        test=splits["test"],
        image_size=image_size,
        stem="imagenet",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=names,
        train_noisy_labels=splits["train"].labels.copy(),
    )
