"""Atomic writes, checksummed feature files loaded without unpickling, and result bookkeeping."""

import math
import os
import pickle
import socket

import pytest
import torch

from ltsweep.store import cache as store
from ltsweep.store.atomic import atomic_path, cleanup_temp
from ltsweep.store.results import load_results, prune_failed, read_table, write_rows


def _row(key, status="ok", acc=0.5):
    return dict(
        sweep="s",
        unit_key=key,
        stage="two-stage",
        method="simsiam",
        dataset="digits",
        gamma=1.0,
        noise=0.0,
        noise_type="symmetric",
        loss="ce",
        head="full",
        seed=0,
        data_seed=0,
        epochs=1,
        acc=acc,
        acc_many=acc,
        acc_medium=math.nan,
        acc_few=math.nan,
        class_acc=[acc],
        actual_noise=0.0,
        n_train=5,
        status=status,
        seconds=0.1,
        started="t",
        host="h",
        version="v",
    )


def test_a_writer_killed_half_way_leaves_nothing_readable(tmp_path):
    target = tmp_path / "results" / "a.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("killed")
    assert not target.exists() and not list(target.parent.iterdir())
    # a leftover of a SIGKILLed writer is ignored by readers and removed by the next run
    host = socket.gethostname()
    (target.parent / f".tmp-a.parquet.x.99999999@{host}.ltsweep-tmp").write_bytes(b"junk")
    # not ltsweep's, or still being written (a live pid), or another host's recent file: kept
    kept = [
        ".tmp-mine",
        f".tmp-b.parquet.y.{os.getpid()}@{host}.ltsweep-tmp",
        ".tmp-c.parquet.z.1@elsewhere.ltsweep-tmp",
    ]
    for name in kept:
        (target.parent / name).write_bytes(b"someone else's")
    assert read_table(target.parent).num_rows == 0
    assert cleanup_temp(tmp_path) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(kept)


def test_failed_then_ok_leaves_one_row(tmp_path):
    d = tmp_path / "results"
    write_rows(d, "failed-g1", [_row("k1", "failed"), _row("k2", "failed")])
    write_rows(d, "g1", [_row("k1")])
    assert prune_failed(d) == 0  # k2 has not succeeded yet: its failure stays visible
    assert set(load_results(tmp_path, include_failed=True)["unit_key"]) == {"k1", "k2"}
    write_rows(d, "g2", [_row("k2")])
    assert prune_failed(d) == 1
    assert read_table(d).num_rows == 2 and set(load_results(tmp_path)["unit_key"]) == {"k1", "k2"}


def test_unknown_result_column_is_refused(tmp_path):
    with pytest.raises(KeyError, match="bogus"):
        write_rows(tmp_path, "x", [{**_row("k"), "bogus": 1}])


def test_features_round_trip_and_corruption_is_named(tmp_path):
    tensors = {"train": torch.randn(4, 3), "train_labels": torch.arange(4)}
    path = store.save_features(tmp_path, "key1", 5, tensors)
    assert store.features_ready(tmp_path, "key1", 5)
    assert torch.equal(store.load_features(tmp_path, "key1", 5)["train"], tensors["train"])
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(store.CacheError, match=f"{path}: corrupt feature cache"):
        store.load_features(tmp_path, "key1", 5)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_a_swapped_feature_file_is_not_executed_even_with_a_matching_checksum(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    path = store.save_features(tmp_path, "key2", 1, {"train": torch.zeros(1)})
    path.write_bytes(pickle.dumps({"train": _Evil()}))
    # the attacker also rewrites the checksum: the checksum passes, weights_only still refuses
    import json

    meta = path.with_suffix(".json")
    meta.write_text(json.dumps({"sha256": store._sha256(path), "shapes": {}}))
    with pytest.raises(store.CacheError, match="unreadable feature cache"):
        store.load_features(tmp_path, "key2", 1)
    assert not _Evil.marker.exists()


def test_a_finetune_lost_with_its_pretrain_gets_a_failed_row(tmp_path):
    """The driver's row for fine-tunes whose pre-train failed: typed, keyed, marked failed."""
    from dataclasses import asdict

    from ltsweep import __version__
    from ltsweep.engine.ray_driver import _failed_row
    from ltsweep.planning.plan import make_plan
    from ltsweep.sweep.schema import parse_sweep

    sweep = parse_sweep({"name": "t", "grid": {"ssl": ["simsiam"], "noise": [0.4]}})
    units = make_plan(sweep).finetunes[:3]
    rows = [_failed_row(asdict(u), "pre-train x failed") for u in units]
    write_rows(tmp_path / "results", "failed-g", rows)
    assert load_results(tmp_path).empty  # failed units are not results ...
    table = load_results(tmp_path, include_failed=True)  # ... but are on record
    assert list(table["unit_key"]) == [u.key for u in units]
    assert set(table["status"]) == {"failed"} and set(table["error"]) == {"pre-train x failed"}
    assert list(table["pretrain_key"]) == [u.pretrain_key for u in units]
    assert list(table["head"]) == [u.head for u in units] and table["acc"].isna().all()
    assert set(table["version"]) == {__version__}
    assert set(table["sweep"]) == {"t"}  # the name the units carry from their plan
