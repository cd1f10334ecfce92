"""Damaged checkpoints and snapshots are set aside, and training goes on from the newest state
that is intact: `prev.pt`, else a fresh start; a lost encoder snapshot is made again. Every
outcome is compared with a run that was never damaged, bit for bit (CPU, one thread).

Real data (digits at 16x16), the real width-8 ResNet18 and SimCLR (no EMA, quick), 512 images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ltsweep.data.digits import load_digits_dataset
from ltsweep.data.imbalance import long_tail_indices
from ltsweep.models.resnet import build_encoder
from ltsweep.store.cache import save_verified
from ltsweep.store.unit_progress import read_progress
from ltsweep.sweep.ssl_settings import SSL_SETTINGS
from ltsweep.train.baselines.common import Backbone, Budget, TrainSet
from ltsweep.train.baselines.supervised import LossParams, train_supervised
from ltsweep.train.selfsup.base import build_method
from ltsweep.train.selfsup.loop import Batches, PretrainState, pretrain, snapshot_path

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread_module")
EPOCHS = 3
SETTINGS = SSL_SETTINGS["simclr"](
    proj_hidden=64,
    proj_dim=64,
    batch_size=128,
    warmup_epochs=1,
    checkpoint_every=1,
    knn_every=100,
    epochs=EPOCHS,
)


@pytest.fixture(scope="module")
def data() -> Batches:
    ds = load_digits_dataset(image_size=16)
    index = long_tail_indices(ds.train.labels, ds.num_classes, gamma=1.0, seed=0)[:512]
    return Batches(ds.train, index, ds.test, ds.num_classes, ds.mean, ds.std)


class Killed(Exception):
    """Stands in for the process being killed right after a checkpoint."""


def run(data: Batches, folder: Path, stop_after: int | None = None, keep=(1,)):
    """One pre-train process: a fresh method from seed 0, epochs seen, final state."""
    torch.manual_seed(0)
    method = build_method("simclr", build_encoder(width=8), SETTINGS)
    seen: list[int] = []

    def on_epoch(state: PretrainState) -> None:
        seen.append(state.epoch)
        if state.epoch == stop_after:
            raise Killed

    try:
        state = pretrain(
            method, data, SETTINGS, CPU, folder, seed=7, keep_epochs=keep, on_epoch=on_epoch
        )
    except Killed:
        return seen, None, method
    return seen, state, method


@pytest.fixture(scope="module")
def reference(data: Batches, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("reference")
    _, state, method = run(data, folder)
    return folder, state, method


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def killed_after_two(data: Batches, folder: Path) -> None:
    seen, state, _ = run(data, folder, stop_after=2)
    assert seen == [1, 2] and state is None


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def quarantined(folder: Path) -> list[str]:
    q = folder / ".quarantine"
    return sorted(p.name.rsplit(".", 3)[0] for p in q.iterdir()) if q.is_dir() else []


def test_truncated_last_falls_back_to_prev_and_ends_identical(data, reference, tmp_path):
    killed_after_two(data, tmp_path)  # last.pt = epoch 2, prev.pt = epoch 1
    truncate(tmp_path / "last.pt")
    seen, state, method = run(data, tmp_path)
    assert seen == [2, 3]  # resumed from epoch 1, not from the start
    assert state.loss_history == reference[1].loss_history
    assert same_weights(method, reference[2])
    assert quarantined(tmp_path) == ["last.pt", "last.pt.sha256"]


def test_a_checkpoint_that_does_not_fit_is_set_aside(data, reference, tmp_path):
    """A foreign checkpoint with a matching checksum passes the digest: applying it fails, and
    the one before is used instead (before, the user was told to delete it)."""
    killed_after_two(data, tmp_path)
    save_verified(tmp_path / "last.pt", {"model": {"w": torch.zeros(2)}, "epoch": 2})
    seen, state, method = run(data, tmp_path)
    assert seen == [2, 3]
    assert same_weights(method, reference[2])
    assert quarantined(tmp_path) == ["last.pt", "last.pt.sha256"]


def test_both_checkpoints_damaged_restart_from_scratch(data, reference, tmp_path):
    killed_after_two(data, tmp_path)
    truncate(tmp_path / "last.pt")
    # prev.pt is applied partly (its model loads) before it fails: the fresh start must undo it
    blob = torch.load(tmp_path / "prev.pt", weights_only=True)
    blob.pop("order_gen")
    save_verified(tmp_path / "prev.pt", blob)
    seen, state, method = run(data, tmp_path)
    assert seen == [1, 2, 3]
    assert state.loss_history == reference[1].loss_history
    assert same_weights(method, reference[2])
    assert quarantined(tmp_path) == ["last.pt", "last.pt.sha256", "prev.pt", "prev.pt.sha256"]


def test_a_lost_kept_snapshot_is_trained_again(data, reference, tmp_path):
    killed_after_two(data, tmp_path)
    victim = snapshot_path(tmp_path, "encoder", 1)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    seen, state, method = run(data, tmp_path)
    assert seen == [1, 2, 3]  # epoch 1's encoder can only come from training again
    assert same_weights(method, reference[2])
    for part in ("encoder", "projector"):
        got = torch.load(snapshot_path(tmp_path, part, 1), weights_only=True)
        want = torch.load(snapshot_path(reference[0], part, 1), weights_only=True)
        assert all(torch.equal(v, want[k]) for k, v in got.items())
    assert quarantined(tmp_path) == ["encoder-epoch00001.pt", "encoder-epoch00001.pt.sha256"]


def test_the_checkpoint_epochs_snapshot_is_rewritten_from_the_checkpoint(data, reference, tmp_path):
    killed_after_two(data, tmp_path)
    snapshot_path(tmp_path, "encoder", 2).unlink()
    seen, _, method = run(data, tmp_path)
    assert seen == [3]  # no retraining: the checkpoint holds epoch 2's weights
    got = torch.load(snapshot_path(tmp_path, "encoder", 2), weights_only=True)
    want = torch.load(snapshot_path(reference[0], "encoder", 2), weights_only=True)
    assert all(torch.equal(v, want[k]) for k, v in got.items())
    assert same_weights(method, reference[2])


def test_snapshots_carry_checksums_that_catch_a_flip(reference):
    from ltsweep.store.cache import CacheError, load_verified

    folder = reference[0]
    path = snapshot_path(folder, "projector", EPOCHS)
    assert path.with_name(path.name + ".sha256").is_file()
    copy = folder / "copy.pt"
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0x01
    copy.write_bytes(bytes(raw))
    copy.with_name("copy.pt.sha256").write_bytes(path.with_name(path.name + ".sha256").read_bytes())
    with pytest.raises(CacheError, match="copy.pt: checksum mismatch"):
        load_verified(copy)


def test_a_baseline_whose_checkpoints_are_all_unusable_restarts(data, tmp_path):
    index = data.index[:256]
    labels = data.train.labels[index]
    train = TrainSet(data.train, index, labels, labels, data.num_classes, data.mean, data.std)
    backbone = Backbone("resnet18", 4, "cifar")
    budget = Budget(3, 64, "sgd", 0.9, 0.05, 5e-4, "cosine", 2, 0.5)

    class Stop(Exception):
        pass

    def stop(epoch: int) -> None:
        if epoch == 2:
            raise Stop

    def go(folder: Path, **kw):
        return train_supervised(
            train, data.test, backbone, budget, LossParams("ce"), CPU, folder, 3, 1, **kw
        )

    ref = go(tmp_path / "a")
    with pytest.raises(Stop):
        go(tmp_path / "b", on_epoch=stop)
    share, seconds = read_progress(tmp_path / "b")  # what the driver's ETA reads
    assert share == pytest.approx(2 / 3) and seconds > 0
    for name in ("last.pt", "prev.pt"):  # both match their checksum, neither fits the networks
        save_verified(tmp_path / "b" / name, {"nets": [{"w": torch.zeros(1)}], "epoch": 2})
    out = go(tmp_path / "b")
    assert torch.equal(ref.test_logits, out.test_logits)
    assert ref.loss_history == out.loss_history
    assert read_progress(tmp_path / "b")[0] == 1.0
    assert quarantined(tmp_path / "b") == ["last.pt", "last.pt.sha256", "prev.pt", "prev.pt.sha256"]
