"""Real noisy labels (CIFAR-10N / CIFAR-100N) as grid.noise_type cifar-n."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from ltsweep.data import cell, long_tail_indices
from ltsweep.data.base import ArrayImageSet, DataError, Dataset
from ltsweep.planning.plan import make_plan
from ltsweep.sweep.schema import SpecError, check_data_root, parse_sweep
from ltsweep.train import finetune as stacked
from ltsweep.units import baseline as unit_mod
from ltsweep.units.base import RunContext, content_key
from ltsweep.units.baseline import plan_baselines
from ltsweep.units.finetune import run_finetunes
from tests.helpers import SHARED

CIFAR10N = SHARED / "data" / "cifar-n" / "cifar10n_labels.npz"

POOL = 10 * 30  # a fake CIFAR-10 training set: 30 images per class, in "official order"
CLEAN = np.arange(POOL) % 10


def _worse(clean: np.ndarray) -> np.ndarray:
    """Every third sample relabelled to the next class: a known, data-independent noise."""
    out = clean.copy()
    out[::3] = (out[::3] + 1) % 10
    return out


@pytest.fixture()
def label_npz(tmp_path):
    path = tmp_path / "fake-n.npz"
    worse = _worse(CLEAN)
    aggre = CLEAN.copy()
    aggre[::7] = (aggre[::7] + 2) % 10
    np.savez(
        path,
        clean_label=CLEAN.astype(np.uint8),
        worse_label=worse.astype(np.uint8),
        aggre_label=aggre.astype(np.uint8),
    )
    return path


def _file(path: Path, key: str = "worse_label") -> dict[str, str]:
    return {
        "path": str(path),
        "key": key,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def _sweep(path, key="worse_label", **extra):
    spec = {
        "name": "n",
        "data": {"dataset": "cifar10", "noisy_labels": {"path": str(path), "key": key}},
        "backbone": {"width": 4},
        "grid": {"ssl": ["simclr"], "noise_type": "cifar-n", "gamma": [3], "losses": ["ce"]},
        "baselines": {"methods": ["ce"], "epochs": 1},
        "execution": {"device": "cpu"},
    }
    spec.update(extra)
    return parse_sweep(spec)


# --- noisy_labels itself ------------------------------------------------------------------


def test_noisy_labels_reads_the_file_at_the_subset_indices(label_npz):
    index = long_tail_indices(CLEAN, 10, 3, seed=0)
    clean = CLEAN[index]
    got = cell.noisy_labels(clean, 10, 0.0, "cifar-n", 5, index, _file(label_npz))
    worse = _worse(CLEAN)
    np.testing.assert_array_equal(got.labels, worse[index])
    np.testing.assert_array_equal(got.changed, worse[index] != CLEAN[index])
    assert got.labels.dtype == np.int64
    assert got.actual_rate == pytest.approx(np.mean(worse[index] != CLEAN[index]))
    assert 0.2 < got.actual_rate < 0.45  # every third sample, on the subset
    # the seed plays no part: the file's labels are the noise
    again = cell.noisy_labels(clean, 10, 0.0, "cifar-n", 99, index, _file(label_npz))
    np.testing.assert_array_equal(again.labels, got.labels)
    other = cell.noisy_labels(clean, 10, 0.0, "cifar-n", 5, index, _file(label_npz, "aggre_label"))
    assert not np.array_equal(other.labels, got.labels)


def test_noisy_labels_refuses_what_cannot_be_right(label_npz, tmp_path):
    index = np.arange(20)
    clean = CLEAN[index]
    ok = _file(label_npz)
    with pytest.raises(ValueError, match="original indices"):
        cell.noisy_labels(clean, 10, 0.0, "cifar-n", 0)
    with pytest.raises(ValueError, match="noise 0"):
        cell.noisy_labels(clean, 10, 0.2, "cifar-n", 0, index, ok)
    with pytest.raises(ValueError, match="unknown noise type"):
        cell.noisy_labels(clean, 10, 0.0, "pairflip", 0, index, ok)
    with pytest.raises(ValueError, match="has 300 labels"):
        cell.noisy_labels(CLEAN[:2], 10, 0.0, "cifar-n", 0, np.array([0, 300]), ok)
    with pytest.raises(ValueError, match="5 classes"):  # a CIFAR-100N-like file on fewer classes
        cell.noisy_labels(clean % 5, 5, 0.0, "cifar-n", 0, index, ok)
    with pytest.raises(DataError, match="changed since the sweep was planned"):
        cell.noisy_labels(clean, 10, 0.0, "cifar-n", 0, index, {**ok, "sha256": "0" * 64})
    with pytest.raises(DataError, match="no key 'nope'"):
        cell.noisy_labels(clean, 10, 0.0, "cifar-n", 0, index, _file(label_npz, "nope"))
    # symmetric noise is what it was: the extra arguments change nothing
    sym = cell.noisy_labels(clean, 10, 0.4, "symmetric", 3, index, None)
    np.testing.assert_array_equal(sym.labels, cell.symmetric_noise(clean, 10, 0.4, 3).labels)


# --- the sweep file -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,expected",
    [
        (
            {"data": {"dataset": "cifar10"}},
            "data.noisy_labels: grid.noise_type cifar-n needs a label file",
        ),
        (
            {"data": {"dataset": "digits", "noisy_labels": {"path": "x.npz", "key": "k"}}},
            "grid.noise_type: cifar-n labels exist for cifar10 and cifar100 only, not digits",
        ),
        (
            {"grid": {"noise_type": "cifar-n", "noise": [0.0, 0.2]}},
            "grid.noise: must be [0.0] with noise_type cifar-n, the file's labels are the noise",
        ),
        (
            {"grid": {"noise_type": "symmetric"}},
            "data.noisy_labels: only read with grid.noise_type: cifar-n",
        ),
        ({"grid": {"noise_type": "asym"}}, "grid.noise_type: 'asym'"),
        (
            {"data": {"dataset": "cifar10", "noisy_labels": {"path": "x.npz"}}},
            "data.noisy_labels.key: required field is missing",
        ),
    ],
)
def test_sweep_validation_names_the_field(change, expected):
    spec = {
        "name": "n",
        "data": {"dataset": "cifar10", "noisy_labels": {"path": "x.npz", "key": "k"}},
        "grid": {"noise_type": "cifar-n"},
        **change,
    }
    with pytest.raises(SpecError) as err:
        parse_sweep(spec, "s.yaml")
    message = str(err.value)
    assert message.startswith("s.yaml: ") and expected in message and "\n" not in message


def test_preflight_names_a_missing_file_or_key(tmp_path, label_npz, monkeypatch):
    monkeypatch.setenv("LTSWEEP_DATA", str(tmp_path))
    check_data_root(_sweep(label_npz))  # fine
    with pytest.raises(
        SpecError, match=r"s.yaml: data.noisy_labels.path: .*/gone.npz does not exist"
    ):
        check_data_root(_sweep(tmp_path / "gone.npz"), "s.yaml")
    with pytest.raises(SpecError, match=r"data.noisy_labels.key: .* has no array 'best_label' \("):
        check_data_root(_sweep(label_npz, key="best_label"))
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(SpecError, match="is not an .npz archive"):
        check_data_root(_sweep(tmp_path / "bad.npz"))


def test_cli_plan_exits_2_on_a_missing_label_file(tmp_path, capsys, monkeypatch):
    from ltsweep.cli import main

    monkeypatch.setenv("LTSWEEP_DATA", str(tmp_path))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        "name: n\ndata: {dataset: cifar10, noisy_labels: {path: nowhere.npz, key: worse_label}}\n"
        "grid: {noise_type: cifar-n}\n"
    )
    assert main(["plan", str(sweep), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "data.noisy_labels.path: " in err[0]
        and "nowhere.npz does not exist" in err[0]
    )


# --- content keys -------------------------------------------------------------------------


def test_keys_follow_the_file_content_and_key(tmp_path, label_npz):
    def keys(sweep):
        plan = make_plan(sweep)
        return {u.key for u in plan.finetunes}, {u.key for u in plan_baselines(sweep)}

    base = _sweep(label_npz)
    ft, bl = keys(base)
    assert ft and bl
    assert keys(_sweep(label_npz)) == (ft, bl)  # stable
    unit = make_plan(base).finetunes[0]
    # the file's identity, and its labels' measured noise rate (every third label flipped)
    expected = _file(label_npz.resolve()) | {"noise_rate": 1 / 3}
    assert unit.noise_type == "cifar-n" and unit.label_file == pytest.approx(expected)
    assert plan_baselines(base)[0].label_file == unit.label_file
    # another array of the same file: new fine-tune and baseline keys, same pre-train
    other = _sweep(label_npz, key="aggre_label")
    assert [p.key for p in make_plan(other).pretrains] == [p.key for p in make_plan(base).pretrains]
    ft2, bl2 = keys(other)
    assert ft2.isdisjoint(ft) and bl2.isdisjoint(bl)
    # the same file elsewhere: same keys (keys hold content, never paths)
    moved = tmp_path / "elsewhere" / "copy.npz"
    moved.parent.mkdir()
    moved.write_bytes(label_npz.read_bytes())
    assert keys(_sweep(moved)) == (ft, bl)
    # the file's content changed: new keys
    with np.load(label_npz) as z:
        arrays = dict(z)
    arrays["worse_label"] = arrays["worse_label"].copy()
    arrays["worse_label"][0] += 1
    np.savez(moved, **arrays)
    ft3, bl3 = keys(_sweep(moved))
    assert ft3.isdisjoint(ft) and bl3.isdisjoint(bl)


def test_symmetric_keys_are_what_they_were():
    """The new label_file fields are not hashed unless noise_type is cifar-n."""
    sweep = parse_sweep(
        {"name": "s", "grid": {"noise": [0.0, 0.4]}, "baselines": {"methods": ["ce"]}}
    )
    for u in make_plan(sweep).finetunes:
        carried = ("key", "label_file", "sweep_name", "cpu", "gpu")  # on the unit, not hashed
        fields = {k: v for k, v in asdict(u).items() if k not in carried}
        assert u.label_file is None and u.key == content_key("finetune", fields)
    for b in plan_baselines(sweep):
        fields = {
            "method": b.method,
            "data": sweep.data.identity(),
            "backbone": sweep.backbone.model_dump(),
            "gamma": b.gamma,
            "data_seed": b.data_seed,
            "noise": b.noise,
            "noise_type": b.noise_type,
            "seed": b.seed,
            # what the worker runs with travels in settings but is not hashed
            "settings": {k: v for k, v in b.settings.items() if k != "execution"},
            "device": "cuda",  # the default resources give baselines a GPU
        }
        assert b.label_file is None and b.key == content_key("baseline", fields)


# --- both stages read the same labels -----------------------------------------------------


def _fake_cifar10() -> Dataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(POOL, 3, 8, 8), dtype=np.uint8)
    test = rng.integers(0, 256, size=(50, 3, 8, 8), dtype=np.uint8)
    return Dataset(
        name="cifar10",
        num_classes=10,
        train=ArrayImageSet(images, CLEAN.copy()),
        test=ArrayImageSet(test, np.arange(50) % 10),
        image_size=8,
    )


def test_finetunes_and_baselines_get_the_same_file_labels(tmp_path, label_npz, monkeypatch):
    import torch

    from ltsweep.store import cache as store

    monkeypatch.setenv("LTSWEEP_DATA", str(tmp_path))
    sweep = _sweep(label_npz)
    data = _fake_cifar10()
    monkeypatch.setattr(cell, "dataset_for", lambda s: data)
    plan = make_plan(sweep)
    (pre,) = plan.pretrains
    index = cell.training_subset(data, pre.gamma, pre.data_seed)
    torch.manual_seed(0)
    store.save_features(
        tmp_path / "cache",
        pre.key,
        pre.epochs,
        {
            "train": torch.randn(len(index), 32),
            "test": torch.randn(50, 32),
            "train_labels": torch.as_tensor(data.train.labels[index]),
            "test_labels": torch.as_tensor(data.test.labels),
            "train_index": torch.as_tensor(index),
            "knn_acc": torch.tensor(0.5),
        },
    )
    seen = {}
    real_stacked = stacked.train_stacked

    def spy_stacked(train_x, test_x, num_classes, head, trials, head_init=None):
        seen["finetune"] = trials[0].labels.copy()
        return real_stacked(train_x, test_x, num_classes, head, trials, head_init)

    monkeypatch.setattr(stacked, "train_stacked", spy_stacked)
    ctx = RunContext(sweep, tmp_path / "run", tmp_path / "cache")
    (row,) = run_finetunes(ctx, plan.finetunes, "ft")

    worse = _worse(CLEAN)
    np.testing.assert_array_equal(seen["finetune"], worse[index])
    assert row["noise_type"] == "cifar-n" and row["noise"] == 0.0
    assert row["actual_noise"] == pytest.approx(np.mean(worse[index] != CLEAN[index]))

    (bunit,) = plan_baselines(sweep)
    b_index, b_clean, b_noisy = unit_mod.cell_labels(sweep, bunit)
    np.testing.assert_array_equal(b_index, index)
    np.testing.assert_array_equal(b_noisy.labels, seen["finetune"])
    assert b_noisy.actual_rate == row["actual_noise"]


# --- the real CIFAR-10N file --------------------------------------------------------------


def test_real_cifar10n_worse_label_on_a_long_tail():
    if not CIFAR10N.is_file():
        pytest.skip(f"real CIFAR-10N labels not available: {CIFAR10N} is absent")
    with np.load(CIFAR10N) as z:
        clean = z["clean_label"].astype(np.int64)
    assert len(clean) == 50_000
    index = long_tail_indices(clean, 10, 100, seed=0)
    assert len(index) == 12_406
    got = cell.noisy_labels(clean[index], 10, 0.0, "cifar-n", 0, index, _file(CIFAR10N))
    assert got.actual_rate == pytest.approx(0.40, abs=0.03)  # the file: 40.2 % on all 50,000
    assert got.actual_rate == pytest.approx(float(np.mean(got.labels != clean[index])))
