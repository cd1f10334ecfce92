"""Damaged stored files: every kind of stored file x every kind of damage ends, after one
`ltsweep run`, with the reference table; what was damaged is moved aside, never trusted.

One reference run of a tiny sweep (2 pre-trains, 8 fine-tunes, 4 baselines) is copied once
per kind of damage, and in that copy every kind of file is damaged at once (each in a
different unit, so that each is actually read again):

* a results file (a baseline's Parquet);
* a feature cache entry (.pt) and its checksum (.json) of pre-train A, whose fine-tune
  results are removed so that the run needs the features, and the encoder snapshot those
  features are made from (so the run makes it again from A's checkpoint);
* pre-train B's last.pt, with its finished record, its features and its fine-tune results
  removed, so that the run resumes pre-train B from its checkpoint;
* a baseline's last.pt, with its result removed, so that the run resumes it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ltsweep
from tests.helpers import ltsweep_cmd

pytestmark = pytest.mark.slow

SWEEP = """\
name: damage
data: {dataset: digits, image_size: 8, test_per_class: 20}
backbone: {width: 4}
grid:
  ssl: [simsiam]
  gamma: [1, 10]
  noise: [0.0, 0.7]
  losses: [ce, la+sl]
  seeds: [0]
ssl:
  simsiam:
    epochs: 3
    batch_size: 64
    warmup_epochs: 1
    checkpoint_every: 1
    knn_every: 3
    proj_hidden: 32
    proj_dim: 32
    pred_hidden: 16
    finetune: {epochs: 3, batch_size: 64}
baselines: {methods: [ce], epochs: 2, checkpoint_every: 1, batch_size: 64}
resources:
  pretrain: {cpu: 1, gpu: 0}
  finetune: {cpu: 1, gpu: 0}
execution: {device: cpu}
"""
DAMAGES = ["truncate", "flip", "empty", "foreign", "delete"]
COLUMNS = ["acc", "acc_many", "acc_medium", "acc_few", "actual_noise", "n_train", "knn_acc"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("damage-reference")
    (base / "sweep.yaml").write_text(SWEEP)
    done = ltsweep_cmd(
        "run", "sweep.yaml", "--run-dir", "run", "--cache-dir", "cache", "--quiet", cwd=base
    )
    assert done.returncode == 0, done.stderr
    return base


def _foreign(path: Path) -> bytes:
    if path.suffix == ".parquet":
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"something": [1, 2, 3]}), sink)
        return sink.getvalue().to_pybytes()
    if path.suffix == ".json":
        return json.dumps({"not": "a checksum"}).encode()
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(3)}, buf)
    return buf.getvalue()


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        pos = len(data) // 2
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "foreign":
        path.write_bytes(_foreign(path))
    else:
        path.unlink()


def _rows(results: Path) -> dict[Path, list[str]]:
    return {
        f: pq.read_table(f, columns=["unit_key"]).column("unit_key").to_pylist()
        for f in sorted(results.glob("*.parquet"))
    }


def _table(run: Path):
    return ltsweep.load_results(run).set_index("unit_key").sort_index()


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_files_are_moved_aside_and_recomputed(reference, tmp_path, how):
    shutil.copytree(reference / "run", tmp_path / "run")
    shutil.copytree(reference / "cache", tmp_path / "cache")
    shutil.copy(reference / "sweep.yaml", tmp_path / "sweep.yaml")
    run, cache = tmp_path / "run", tmp_path / "cache"
    # the cache's copies of the rows go too: removed results must be recomputed here, not
    # reused from the cache (a run sharing the cache reuses them)
    shutil.rmtree(cache / "rows")
    results = run / "results"
    rows = _rows(results)
    want = _table(reference / "run")
    baselines = sorted(want.index[want["stage"] == "single-stage"])
    pre_a, pre_b = sorted(p.name for p in (cache / "pretrain").iterdir())

    # a results file: the first baseline's
    victim_rows = next(f for f, keys in rows.items() if baselines[0] in keys)
    # a baseline's checkpoint: the second baseline's, with its result removed
    for f, keys in rows.items():
        if baselines[1] in keys:
            f.unlink()
    # pre-train A's features (and checksum), with its fine-tunes' results removed
    features = sorted((cache / "features" / pre_a).glob("*.pt"))[0]
    # pre-train B's checkpoint, with what it finished removed
    (cache / "pretrain" / pre_b / "meta.json").unlink()
    shutil.rmtree(cache / "features" / pre_b)
    for f, keys in rows.items():
        if f.exists() and set(want.loc[keys, "pretrain_key"].dropna()) & {pre_a, pre_b}:
            f.unlink()
    for path in (
        victim_rows,
        features,
        features.with_suffix(".json"),
        cache / "pretrain" / pre_a / "encoder-epoch00003.pt",
        cache / "pretrain" / pre_b / "last.pt",
        cache / "baseline" / baselines[1] / "last.pt",
    ):
        damage(path, how)

    done = ltsweep_cmd(
        "run", "sweep.yaml", "--run-dir", "run", "--cache-dir", "cache", "--quiet", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    got = _table(run)
    assert list(got.index) == list(want.index)  # nothing missing, nothing twice
    np.testing.assert_array_equal(got[COLUMNS].to_numpy(), want[COLUMNS].to_numpy())
    if how != "delete":  # what was damaged was moved aside, and said so
        assert list((cache / ".quarantine").iterdir()), done.stderr
        assert "moved to" in done.stderr
    if how in ("truncate", "empty", "foreign"):
        assert list((results / ".quarantine").iterdir()), done.stderr
    # a second run finds everything stored and intact
    again = ltsweep_cmd(
        "run", "sweep.yaml", "--run-dir", "run", "--cache-dir", "cache", "--quiet", cwd=tmp_path
    )
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr


def test_read_only_commands_skip_a_damaged_results_file(reference, tmp_path):
    shutil.copytree(reference / "run", tmp_path / "run")
    victim = sorted((tmp_path / "run" / "results").glob("*.parquet"))[0]
    damage(victim, "truncate")
    n = len(ltsweep.load_results(reference / "run"))
    assert len(ltsweep.load_results(tmp_path / "run")) < n
    for command in ("status", "results"):
        out = ltsweep_cmd(command, "run", cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and str(victim.name) in lines[0] and "skipped" in lines[0], lines
    assert victim.exists()  # read-only commands move nothing
