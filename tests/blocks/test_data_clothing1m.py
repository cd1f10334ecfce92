"""Clothing1M loader on a fake tree in the official layout: labels, lazy decoding, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ltsweep.data import DataError, load_dataset
from ltsweep.data.clothing1m import FileImageSet, decode_image, load_clothing1m, resize_for

NAMES = ["T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
         "Jacket", "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear"]  # fmt: skip
REQUIRED = [
    "noisy_label_kv.txt",
    "clean_label_kv.txt",
    "noisy_train_key_list.txt",
    "clean_test_key_list.txt",
    "category_names_eng.txt",
]


def _jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int], gray: bool = False) -> None:
    w, h = size
    # Smooth content (no wrap-around edges), so JPEG artefacts do not dominate comparisons.
    y, x = np.mgrid[0:h, 0:w]
    base = rng.integers(60, 136, size=3)
    pixels = base + 60 * np.sin(x / 7.0)[..., None] + 60 * np.cos(y / 5.0)[..., None]
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    (image.convert("L") if gray else image).save(path, quality=90)


def write_clothing1m(root: Path, seed: int = 0) -> dict:
    """30 tiny JPEGs of random sizes: 20 noisy-train, 6 clean-test, 4 clean-val."""
    rng = np.random.default_rng(seed)
    keys = []
    for i in range(30):
        key = f"images/{i % 3}/{i % 7:02d}/{1000 + i},{2000 + i}.jpg"
        w, h = (int(v) for v in rng.integers(20, 90, size=2))
        _jpeg(root / key, rng, (w, h), gray=(i == 4))
        keys.append(key)
    train, test, val = keys[:20], keys[20:26], keys[26:]
    noisy = rng.integers(0, 14, size=30)
    clean = rng.integers(0, 14, size=30)
    # noisy_label_kv covers the training keys plus a few others, in a different order;
    # clean_label_kv covers test, val and two training keys (whose clean labels are unused).
    noisy_kv = [(keys[i], noisy[i]) for i in [*range(29, 19, -1), *range(20)]]
    clean_kv = [(keys[i], clean[i]) for i in [*range(20, 30), 3, 11]]
    (root / "noisy_label_kv.txt").write_text("".join(f"{k} {v}\n" for k, v in noisy_kv))
    (root / "clean_label_kv.txt").write_text("".join(f"{k} {v}\n" for k, v in clean_kv))
    (root / "noisy_train_key_list.txt").write_text("".join(f"{k}\n" for k in train))
    (root / "clean_test_key_list.txt").write_text("".join(f"{k}\n" for k in test))
    (root / "clean_val_key_list.txt").write_text("".join(f"{k}\n" for k in val))
    (root / "category_names_eng.txt").write_text("\n".join(NAMES) + "\n")
    return {"train": train, "test": test, "train_y": noisy[:20], "test_y": clean[20:26]}


def _reference(path: Path, size: int) -> np.ndarray:
    """torchvision's Resize(resize_for(size)) + CenterCrop(size) on the full-resolution image."""
    from torchvision import transforms

    tf = transforms.Compose(
        [transforms.Resize(resize_for(size)), transforms.CenterCrop(size), transforms.PILToTensor()]
    )
    with Image.open(path) as im:
        return tf(im.convert("RGB")).numpy()


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, write_clothing1m(tmp_path)


def test_labels_and_metadata(tree: tuple[Path, dict]) -> None:
    root, want = tree
    ds = load_clothing1m(root)
    assert ds.name == "clothing1m" and ds.num_classes == 14 and ds.class_names == NAMES
    assert ds.stem == "imagenet" and ds.image_size == 224
    assert ds.mean == (0.485, 0.456, 0.406) and ds.std == (0.229, 0.224, 0.225)
    assert len(ds.train) == 20 and len(ds.test) == 6
    np.testing.assert_array_equal(ds.train.labels, want["train_y"])  # noisy labels, key order
    np.testing.assert_array_equal(ds.train_noisy_labels, want["train_y"])
    np.testing.assert_array_equal(ds.test.labels, want["test_y"])  # clean labels
    assert ds.train.labels.dtype == np.int64 and ds.test.labels.dtype == np.int64
    assert [ds.train.path(i) for i in range(20)] == [str(root / k) for k in want["train"]]
    assert ds.train.train and not ds.test.train


@pytest.mark.parametrize("size", [224, 32])
def test_lazy_decoding_matches_resize_center_crop(tree: tuple[Path, dict], size: int) -> None:
    root, want = tree
    ds = load_clothing1m(root, image_size=size)
    index = np.array([4, 0, 19, 7])
    batch = ds.train.images(index)
    assert isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8
    assert tuple(batch.shape) == (4, 3, size, size)
    for row, i in zip(batch.numpy(), index, strict=True):
        np.testing.assert_array_equal(row, _reference(root / want["train"][i], size))
    gray = batch[0]  # key 4 is a grayscale JPEG: three equal channels
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    test_batch = ds.test.images(np.arange(6))
    assert tuple(test_batch.shape) == (6, 3, size, size)


def test_resize_ratio() -> None:
    assert resize_for(224) == 256 and resize_for(112) == 128 and resize_for(32) == 37


def test_large_jpeg_uses_draft_but_stays_close(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    _jpeg(path, np.random.default_rng(3), (1200, 900))
    reference = _reference(path, 224)
    np.testing.assert_array_equal(decode_image(str(path), 224, draft=False), reference)
    got = decode_image(str(path), 224)
    assert got.shape == (3, 224, 224) and got.dtype == np.uint8
    diff = np.abs(got.astype(int) - reference.astype(int))
    assert 0 < diff.mean() < 2.5, diff.mean()  # reduced-scale decoding did happen
    exact = FileImageSet([path], [0], 224, train=True, draft=False)
    np.testing.assert_array_equal(exact.images(np.array([0]))[0].numpy(), reference)


def test_image_set_details(tree: tuple[Path, dict]) -> None:
    root, want = tree
    ds = load_clothing1m(root, image_size=32)
    assert tuple(ds.train.images(np.array([], dtype=np.int64)).shape) == (0, 3, 32, 32)
    first = ds.train.images(np.arange(20))  # starts the thread pool
    clone = pickle.loads(pickle.dumps(ds.train))  # e.g. shipped to a Ray worker
    assert torch.equal(clone.images(np.arange(20)), first)
    np.testing.assert_array_equal(clone.labels, ds.train.labels)
    single = FileImageSet([root / want["test"][0]], [3], 32, train=False)
    assert len(single) == 1 and tuple(single.images(np.array([0])).shape) == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="2 paths but 1 labels"):
        FileImageSet(["a", "b"], [0], 32, train=True)


def test_dispatcher(tree: tuple[Path, dict]) -> None:
    from ltsweep.sweep.schema import DataSettings

    root, _ = tree
    ds = load_dataset(DataSettings(dataset="clothing1m", root=str(root), image_size=64))
    assert ds.num_classes == 14 and tuple(ds.test.images(np.array([1])).shape) == (1, 3, 64, 64)


# --- errors ------------------------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"data.root {tmp_path / 'x'} does not exist"):
        load_clothing1m(tmp_path / "x")


@pytest.mark.parametrize("name", REQUIRED)
def test_missing_file(tree: tuple[Path, dict], name: str) -> None:
    root, _ = tree
    (root / name).unlink()
    with pytest.raises(DataError, match=f"{root / name} not found"):
        load_clothing1m(root)


def test_val_list_is_optional(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    (root / "clean_val_key_list.txt").unlink()
    assert len(load_clothing1m(root).test) == 6


def test_missing_images_folder(tmp_path: Path) -> None:
    for name in REQUIRED:
        (tmp_path / name).write_text("")
    with pytest.raises(DataError, match=f"{tmp_path / 'images'} not found"):
        load_clothing1m(tmp_path)


def test_missing_or_corrupt_image_at_decode(tree: tuple[Path, dict]) -> None:
    root, want = tree
    ds = load_clothing1m(root, image_size=32)
    (root / want["train"][5]).unlink()
    (root / want["train"][6]).write_bytes(b"not a jpeg")
    for i in (5, 6):
        with pytest.raises(DataError, match=f"cannot decode {root / want['train'][i]}"):
            ds.train.images(np.array([0, i, 1]))


def test_first_image_missing_fails_at_load(tree: tuple[Path, dict]) -> None:
    root, want = tree
    (root / want["test"][0]).unlink()
    with pytest.raises(DataError, match="first key of .*clean_test_key_list.txt"):
        load_clothing1m(root)


def test_key_without_label(tree: tuple[Path, dict]) -> None:
    root, want = tree
    kv = root / "noisy_label_kv.txt"
    kv.write_text(
        "".join(ln + "\n" for ln in kv.read_text().splitlines() if want["train"][2] not in ln)
    )
    with pytest.raises(
        DataError, match=f"1 keys of .*noisy_train_key_list.txt have no label in {kv}"
    ):
        load_clothing1m(root)


@pytest.mark.parametrize(
    "line,match",
    [("images/a.jpg", "line 3: expected '<key> <label>'"),
     ("images/a.jpg x", "line 3: expected '<key> <label>'"),
     ("images/a.jpg 14", "labels outside 0..13")],
)  # fmt: skip
def test_malformed_kv(tree: tuple[Path, dict], line: str, match: str) -> None:
    root, _ = tree
    kv = root / "clean_label_kv.txt"
    lines = kv.read_text().splitlines()
    kv.write_text("\n".join([*lines[:2], line, *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=match) as err:
        load_clothing1m(root)
    assert str(kv) in str(err.value)


def test_wrong_number_of_names(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    (root / "category_names_eng.txt").write_text("\n".join(NAMES[:13]))
    with pytest.raises(DataError, match="lists 13 names, expected 14"):
        load_clothing1m(root)


def test_empty_key_list(tree: tuple[Path, dict]) -> None:
    root, _ = tree
    (root / "clean_test_key_list.txt").write_text("\n")
    with pytest.raises(DataError, match="clean_test_key_list.txt is empty"):
        load_clothing1m(root)
