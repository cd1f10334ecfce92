"""CIFAR-N label files: the real CIFAR-10N/100N arrays and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ltsweep.data import DataError
from ltsweep.data.cifar_n import load_cifar_n_labels
from tests.helpers import SHARED

DATA = SHARED / "data"
CIFAR10N = DATA / "cifar-n" / "cifar10n_labels.npz"
CIFAR100N = DATA / "cifar-n" / "cifar100n_labels.npz"

needs_real = pytest.mark.skipif(
    not CIFAR10N.is_file(), reason=f"real CIFAR-N labels not available: {CIFAR10N} is absent"
)


@needs_real
def test_cifar10n_clean_equals_official_labels() -> None:
    clean = load_cifar_n_labels(CIFAR10N, "clean_label", expected_len=50_000)
    assert clean.dtype == np.int64 and clean.shape == (50_000,)
    with np.load(DATA / "cifar10" / "labels.npz") as official:
        np.testing.assert_array_equal(clean, official["train"])


@needs_real
@pytest.mark.parametrize(
    "key,rate",
    [("worse_label", 0.402), ("aggre_label", 0.090), ("random_label1", 0.172)],
)
def test_cifar10n_noise_rates(key: str, rate: float) -> None:
    clean = load_cifar_n_labels(CIFAR10N, "clean_label")
    noisy = load_cifar_n_labels(CIFAR10N, key, expected_len=len(clean))
    assert noisy.min() >= 0 and noisy.max() <= 9
    assert abs((noisy != clean).mean() - rate) < 0.001


@needs_real
def test_cifar100n() -> None:
    clean = load_cifar_n_labels(CIFAR100N, "clean_label", expected_len=50_000)
    noisy = load_cifar_n_labels(CIFAR100N, "noisy_label", expected_len=50_000)
    assert clean.max() == 99 and np.bincount(clean).tolist() == [500] * 100
    assert abs((noisy != clean).mean() - 0.402) < 0.001


@needs_real
def test_missing_key_lists_available() -> None:
    with pytest.raises(DataError) as err:
        load_cifar_n_labels(CIFAR10N, "noisy_label")
    msg = str(err.value)
    assert str(CIFAR10N) in msg and "'noisy_label'" in msg
    for key in ("aggre_label", "clean_label", "worse_label", "random_label1"):
        assert key in msg


@needs_real
def test_length_mismatch() -> None:
    with pytest.raises(DataError, match=r"has 50000 labels, expected 10000") as err:
        load_cifar_n_labels(CIFAR10N, "worse_label", expected_len=10_000)
    assert str(CIFAR10N) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path / 'none.npz'} not found"):
        load_cifar_n_labels(tmp_path / "none.npz", "worse_label")


def test_round_trip_and_bad_contents(tmp_path: Path) -> None:
    path = tmp_path / "labels.npz"
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    np.savez(
        path,
        good=labels,
        floats=labels.astype(np.float32),
        grid=labels[:4].reshape(2, 2),
        objects=np.array([1, "a"], dtype=object),
        negative=np.array([0, -1]),
    )
    got = load_cifar_n_labels(path, "good", expected_len=5)
    assert got.dtype == np.int64 and got.tolist() == [3, 1, 4, 1, 5]
    for key in ("floats", "grid"):
        with pytest.raises(DataError, match="1-D integer array"):
            load_cifar_n_labels(path, key)
    with pytest.raises(DataError, match=f"cannot read {path}"):  # pickled objects refused
        load_cifar_n_labels(path, "objects")
    with pytest.raises(DataError, match="negative"):
        load_cifar_n_labels(path, "negative")


def test_not_an_npz(tmp_path: Path) -> None:
    npy = tmp_path / "labels.npy"
    np.save(npy, np.arange(3))
    with pytest.raises(DataError, match="not an .npz archive"):
        load_cifar_n_labels(npy, "x")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=f"cannot read {junk}"):
        load_cifar_n_labels(junk, "x")
