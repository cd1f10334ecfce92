"""CIFAR loader: exact round trips from the standard layouts, and a pickle that cannot run code."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import time
from pathlib import Path

import numpy as np
import pytest

from ltsweep.data import DataError, load_dataset
from ltsweep.data.cifar import load_cifar, read_cifar_pickle
from tests.helpers import SHARED

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]  # fmt: skip


def _dump(path: Path, obj: object, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def _batch(rng: np.random.Generator, n: int, classes: int, label_key: str, keys: type) -> tuple:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, classes, size=n)]
    k = (lambda s: s.encode()) if keys is bytes else (lambda s: s)
    batch = {
        k("batch_label"): k("a batch"),
        k(label_key): labels,
        k("data"): data,
        k("filenames"): [k(f"img_{i}.png") for i in range(n)],
    }
    return batch, data, np.array(labels)


def write_cifar10(root: Path, n: int = 20, keys: type = bytes, seed: int = 0) -> dict:
    """The cifar-10-batches-py layout with n images per batch; returns what was written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    k = (lambda s: s.encode()) if keys is bytes else (lambda s: s)
    xs, ys = [], []
    for i in range(1, 6):
        batch, x, y = _batch(rng, n, 10, "labels", keys)
        _dump(folder / f"data_batch_{i}", batch)
        xs.append(x)
        ys.append(y)
    batch, tx, ty = _batch(rng, n // 2, 10, "labels", keys)
    _dump(folder / "test_batch", batch)
    meta = {k("label_names"): [k(c) for c in CIFAR10_NAMES], k("num_cases_per_batch"): n,
            k("num_vis"): 3072}  # fmt: skip
    _dump(folder / "batches.meta", meta)
    return {"train_x": np.concatenate(xs), "train_y": np.concatenate(ys), "test_x": tx,
            "test_y": ty}  # fmt: skip


def write_cifar100(root: Path, n: int = 30, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, size in (("train", n), ("test", n // 3)):
        batch, x, y = _batch(rng, size, 100, "fine_labels", bytes)
        batch[b"coarse_labels"] = [int(v) for v in rng.integers(0, 20, size=size)]
        _dump(folder / split, batch)
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    names = [f"fine{i}".encode() for i in range(100)]
    meta = {b"fine_label_names": names, b"coarse_label_names": [b"c%d" % i for i in range(20)]}
    _dump(folder / "meta", meta)
    return out


def _globals(path: Path) -> set[str]:
    """Module and name of every global a pickle references (protocol <= 3 text globals)."""
    return {str(arg) for op, arg, _ in pickletools.genops(path.read_bytes()) if op.name == "GLOBAL"}


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("keys", [bytes, str], ids=["bytes-keys", "str-keys"])
def test_cifar10_round_trip(tmp_path: Path, keys: type) -> None:
    want = write_cifar10(tmp_path, keys=keys)
    ds = load_cifar("cifar10", tmp_path)
    assert ds.name == "cifar10" and ds.num_classes == 10
    assert ds.stem == "cifar" and ds.image_size == 32
    assert ds.class_names == CIFAR10_NAMES
    assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2470, 0.2435, 0.2616)
    assert ds.train_noisy_labels is None
    assert len(ds.train) == 100 and len(ds.test) == 10
    assert ds.train.array.dtype == np.uint8 and ds.train.array.shape == (100, 3, 32, 32)
    np.testing.assert_array_equal(ds.train.array.reshape(100, -1), want["train_x"])
    np.testing.assert_array_equal(ds.train.labels, want["train_y"])
    np.testing.assert_array_equal(ds.test.array.reshape(10, -1), want["test_x"])
    np.testing.assert_array_equal(ds.test.labels, want["test_y"])
    assert ds.train.labels.dtype == np.int64
    # CHW: the first 1024 bytes of a row are the red plane, row-major.
    assert ds.train.array[7, 0, 1, 2] == want["train_x"][7, 32 + 2]
    assert ds.train.array[7, 2, 31, 31] == want["train_x"][7, 3071]
    batch = ds.train.images(np.array([5, 0, 99]))
    assert tuple(batch.shape) == (3, 3, 32, 32)
    np.testing.assert_array_equal(batch.numpy().reshape(3, -1), want["train_x"][[5, 0, 99]])


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    want = write_cifar100(tmp_path)
    ds = load_cifar("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.stem == "cifar" and ds.image_size == 32
    assert ds.class_names == [f"fine{i}" for i in range(100)]
    assert ds.mean == (0.5071, 0.4865, 0.4409) and ds.std == (0.2673, 0.2564, 0.2762)
    np.testing.assert_array_equal(ds.train.array.reshape(30, -1), want["train_x"])
    np.testing.assert_array_equal(ds.train.labels, want["train_y"])
    np.testing.assert_array_equal(ds.test.array.reshape(10, -1), want["test_x"])
    np.testing.assert_array_equal(ds.test.labels, want["test_y"])


def _py2_style_bytes(obj: object) -> bytes:
    """Pickle `obj` the way the official (Python 2, numpy 1) files are written.

    Every string is a byte string, arrays reduce through numpy.core.multiarray._reconstruct
    with b'b', and dtypes through numpy.dtype with byte-string arguments.
    """
    from ltsweep.data.cifar import _numpy_reconstruct

    class Py2Pickler(pickle.Pickler):
        def reducer_override(self, o: object) -> object:
            if isinstance(o, np.ndarray):
                state = (1, o.shape, o.dtype, False, o.tobytes())
                return _numpy_reconstruct(), (np.ndarray, (0,), b"b"), state
            if isinstance(o, np.dtype):
                state = (3, b"|", None, None, None, -1, -1, 0)
                return np.dtype, (o.str[1:].encode(), 0, 1), state
            return NotImplemented

    buf = io.BytesIO()
    # Protocol 3 writes bytes as BINBYTES, which loads exactly like a Python 2 str does
    # with encoding='bytes'.
    Py2Pickler(buf, protocol=3).dump(obj)
    raw = buf.getvalue()
    return raw.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def test_official_python2_numpy1_pickles(tmp_path: Path) -> None:
    want = write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for f in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
              "test_batch"):  # fmt: skip
        with open(folder / f, "rb") as fh:
            batch = pickle.load(fh)  # our own file, written just above
        (folder / f).write_bytes(_py2_style_bytes(batch))
    assert _globals(folder / "data_batch_1") == {
        "numpy.core.multiarray _reconstruct",
        "numpy ndarray",
        "numpy dtype",
    }
    ds = load_cifar("cifar10", tmp_path)
    np.testing.assert_array_equal(ds.train.array.reshape(100, -1), want["train_x"])
    np.testing.assert_array_equal(ds.train.labels, want["train_y"])


def test_protocol2_python3_globals(tmp_path: Path) -> None:
    """What build_layout.py and other Python 3 copies reference; all must be allowed."""
    write_cifar10(tmp_path)
    refs = _globals(tmp_path / "cifar-10-batches-py" / "data_batch_1")
    assert refs <= {
        "numpy._core.multiarray _reconstruct",
        "numpy.core.multiarray _reconstruct",
        "numpy ndarray",
        "numpy dtype",
        "_codecs encode",
    }


def test_dispatcher(tmp_path: Path) -> None:
    from ltsweep.sweep.schema import DataSettings

    write_cifar10(tmp_path)
    ds = load_dataset(DataSettings(dataset="cifar10", root=str(tmp_path)))
    assert len(ds.train) == 100 and ds.class_names == CIFAR10_NAMES


# --- refusing code ---------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("target", ["data_batch_3", "test_batch", "batches.meta"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_pickle_is_refused_and_not_run(
    tmp_path: Path, target: str, protocol: int
) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar-10-batches-py" / target
    _dump(path, {b"data": _Evil(marker), b"labels": [], b"label_names": []}, protocol=protocol)
    with pytest.raises(DataError) as err:
        load_cifar("cifar10", tmp_path)
    assert str(path) in str(err.value)
    assert "system" in str(err.value)
    assert not marker.exists()


def test_builtins_eval_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil"
    # GLOBAL builtins.eval, then REDUCE on ("1",)
    path.write_bytes(b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.")
    with pytest.raises(DataError, match="builtins.eval"):
        read_cifar_pickle(path)


def test_codecs_encode_only_latin1(tmp_path: Path) -> None:
    path = tmp_path / "codec"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(DataError, match=str(path)):
        read_cifar_pickle(path)
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00latin1\x86R.")
    with pytest.raises(DataError, match="expected a dict"):
        read_cifar_pickle(path)  # allowed, but not a CIFAR dict


# --- errors ------------------------------------------------------------------------------------


def test_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load_cifar("cifar10", root)
    msg = str(err.value)
    assert str(root) in msg and "cifar-10-batches-py" in msg and "--download" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name,missing", [("cifar10", "data_batch_3"), ("cifar10", "batches.meta"),
                                          ("cifar100", "test")])  # fmt: skip
def test_missing_file(tmp_path: Path, name: str, missing: str) -> None:
    (write_cifar10 if name == "cifar10" else write_cifar100)(tmp_path)
    folder = tmp_path / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    (folder / missing).unlink()
    with pytest.raises(DataError) as err:
        load_cifar(name, tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{name}: {folder / missing} not found")
    assert f"'{folder.name}' layout under data.root {tmp_path}" in msg and "\n" not in msg


def test_label_data_length_mismatch(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch = read_cifar_pickle(path)
    _dump(path, {b"data": batch["data"], b"labels": batch["labels"][:-1]})
    with pytest.raises(DataError, match=r"data_batch_2: 20 images but 19 'labels'"):
        load_cifar("cifar10", tmp_path)


@pytest.mark.parametrize(
    "entry,match",
    [
        ({b"data": np.zeros((4, 3071), np.uint8), b"labels": [0] * 4}, "uint8 \\(N, 3072\\)"),
        ({b"data": np.zeros((4, 3072), np.float32), b"labels": [0] * 4}, "uint8 \\(N, 3072\\)"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}, "outside 0..9"),
        ({b"labels": [0]}, "no 'data' entry"),
        ({b"data": np.zeros((1, 3072), np.uint8)}, "no 'labels' entry"),
    ],
)
def test_malformed_batch(tmp_path: Path, entry: dict, match: str) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    _dump(path, entry)
    with pytest.raises(DataError, match=match) as err:
        load_cifar("cifar10", tmp_path)
    assert str(path) in str(err.value)


def test_truncated_and_wrong_meta(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="not a readable CIFAR pickle"):
        load_cifar("cifar10", tmp_path)
    write_cifar10(tmp_path / "b")
    meta = tmp_path / "b" / "cifar-10-batches-py" / "batches.meta"
    _dump(meta, {b"label_names": [b"a", b"b"]})
    with pytest.raises(DataError, match="should list 10 class names"):
        load_cifar("cifar10", tmp_path / "b")


def test_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar1000"):
        load_cifar("cifar1000", tmp_path)


# --- download is opt-in ------------------------------------------------------------------------


def test_download_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ltsweep.data.cifar as cifar

    calls = []

    def fake_fetch(name: str, root: Path) -> None:
        calls.append((name, root))
        write_cifar10(root)

    monkeypatch.setattr(cifar, "_fetch", fake_fetch)
    with pytest.raises(DataError, match="not exist"):
        load_cifar("cifar10", tmp_path / "r")
    assert calls == []
    ds = load_cifar("cifar10", tmp_path / "r", download=True)
    assert calls == [("cifar10", tmp_path / "r")] and len(ds.train) == 100
    load_cifar("cifar10", tmp_path / "r", download=True)  # present: no second fetch
    assert len(calls) == 1


def test_failed_download_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.utils as tvu

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="download of https://.*cifar-100-python.tar.gz"):
        load_cifar("cifar100", tmp_path, download=True)


# --- the real CIFAR-10 -------------------------------------------------------------------------


@pytest.mark.slow
def test_real_cifar10(cifar10_root: Path) -> None:
    labels_file = SHARED / "data" / "cifar10" / "labels.npz"
    start = time.perf_counter()
    ds = load_cifar("cifar10", cifar10_root)
    seconds = time.perf_counter() - start
    assert len(ds.train) == 50_000 and len(ds.test) == 10_000
    assert ds.train.array.shape == (50_000, 3, 32, 32)
    with np.load(labels_file) as official:
        np.testing.assert_array_equal(ds.train.labels, official["train"])
        np.testing.assert_array_equal(ds.test.labels, official["test"])
    assert np.bincount(ds.train.labels, minlength=10).tolist() == [5000] * 10
    assert np.bincount(ds.test.labels, minlength=10).tolist() == [1000] * 10
    assert ds.class_names == CIFAR10_NAMES
    # The per-channel statistics of the JPEG copy match the standard values closely.
    pixels = ds.train.array.reshape(50_000, 3, -1) / 255.0
    np.testing.assert_allclose(pixels.mean(axis=(0, 2)), ds.mean, atol=0.002)
    assert seconds < 30, f"loading took {seconds:.1f} s"
