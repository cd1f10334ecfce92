"""A checkpoint written on another device type or GPU count is resumed, not set aside.

Both directions without a GPU. GPU -> CPU: a checkpoint made here is rewritten as a GPU
worker writes it (`rng_cuda` holds one CUDA generator state, as `get_rng_state_all` gives on
one GPU, and the augmentation generator, made on the device, holds a 16-byte Philox state
instead of the CPU's Mersenne Twister); it resumes on the CPU from its epoch, with `last.pt`
still in place. CPU -> GPU: a CPU checkpoint (no CUDA states) resumes where
`torch.cuda.is_available` says True (to ltsweep's code; torch's internals still see no GPU)
and the CUDA RNG calls are recorded: the CUDA generators
are re-seeded from the unit's seed and the epoch, and one log line says so. The same for the
pre-train loop and a baseline (their loops restore checkpoints separately).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ltsweep.data import long_tail_indices
from ltsweep.models.resnet import build_encoder
from ltsweep.store.cache import save_verified
from ltsweep.sweep.ssl_settings import SSL_SETTINGS
from ltsweep.train.baselines.common import Backbone, Budget, TrainSet
from ltsweep.train.baselines.supervised import LossParams, train_supervised
from ltsweep.train.resume import reseed_value
from ltsweep.train.selfsup.base import build_method
from ltsweep.train.selfsup.loop import Batches, PretrainState, pretrain

CPU = torch.device("cpu")
SEED = 5
pytestmark = pytest.mark.usefixtures("one_thread")


class Stop(Exception):
    """The process killed right after the checkpoint of epoch 2."""


def train(kind: str, digits, folder: Path, stop_after: int | None = None):
    """Three epochs (a checkpoint each) of a tiny pre-train or baseline; the epochs it ran and
    a state_dict of what it trained."""
    index = np.sort(long_tail_indices(digits.train.labels, 10, 1.0, 0)[:64])
    seen: list[int] = []

    def on_epoch(epoch) -> None:
        seen.append(epoch.epoch if isinstance(epoch, PretrainState) else epoch)
        if seen[-1] == stop_after:
            raise Stop

    try:
        if kind == "pretrain":
            settings = SSL_SETTINGS["simclr"](
                proj_hidden=16, proj_dim=8, batch_size=32, epochs=3, knn_every=100,
                checkpoint_every=1, warmup_epochs=0,
            )  # fmt: skip
            torch.manual_seed(0)
            method = build_method("simclr", build_encoder(width=4), settings)
            data = Batches(digits.train, index, digits.test, 10, digits.mean, digits.std)
            pretrain(method, data, settings, CPU, folder, SEED, amp=False, on_epoch=on_epoch)
            return seen, method.state_dict()
        labels = digits.train.labels[index]
        train_set = TrainSet(digits.train, index, labels, labels, 10, digits.mean, digits.std)
        budget = Budget(3, 32, "sgd", 0.9, 0.05, 5e-4, "cosine", 2, 0.5)
        out = train_supervised(
            train_set, digits.test, Backbone("resnet18", 4, "cifar"), budget, LossParams("ce"),
            CPU, folder, SEED, 1, on_epoch=on_epoch,
        )  # fmt: skip
        return seen, {"logits": out.test_logits}
    except Stop:
        return seen, None


def philox_state(seed: int, offset: int) -> torch.Tensor:
    """What a CUDA generator's `get_state()` returns: its seed and offset, 16 bytes."""
    return torch.from_numpy(np.array([seed, offset], dtype=np.int64).view(np.uint8).copy())


def rewrite(path: Path, **changes) -> None:
    blob = torch.load(path, weights_only=True)
    save_verified(path, blob | changes)


def seen_by_ltsweep(answer):
    """`torch.cuda.is_available` answering `answer` to ltsweep's code only: torch's own
    internals (the optimiser's kernel choice) must still see this machine, which has no GPU."""

    real = torch.cuda.is_available

    def is_available() -> bool:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        return answer if caller.startswith("ltsweep") else real()

    return is_available


def recorder(calls: list, what: str):
    """Records the calls ltsweep makes (`torch.manual_seed` calls `manual_seed_all` too)."""

    def record(arg) -> None:
        if sys._getframe(1).f_globals.get("__name__", "").startswith("ltsweep"):
            calls.append((what, arg))

    return record


def resumed_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "resumed from epoch" in r.getMessage()]


@pytest.mark.parametrize("kind", ["pretrain", "baseline"])
def test_a_gpu_checkpoint_resumes_on_the_cpu(kind, digits, tmp_path, caplog):
    assert train(kind, digits, tmp_path, stop_after=2)[0] == [1, 2]
    gpu_like = {"rng_cuda": [philox_state(123, 4)], "aug_gen": philox_state(SEED + 1, 4096)}
    rewrite(tmp_path / "last.pt", **gpu_like)
    rewrite(tmp_path / "prev.pt", **gpu_like)
    twin = tmp_path.parent / f"{tmp_path.name}-twin"
    twin.mkdir()
    for name in ("last.pt", "last.pt.sha256", "prev.pt", "prev.pt.sha256"):
        (twin / name).write_bytes((tmp_path / name).read_bytes())

    with caplog.at_level(logging.WARNING):
        seen, weights = train(kind, digits, tmp_path)
    assert seen == [3]  # from the checkpoint's epoch, not from the start
    assert not (tmp_path / ".quarantine").exists()
    lines = resumed_lines(caplog)
    assert len(lines) == 1, lines
    assert "aug_gen re-seeded" in lines[0] and "CUDA RNG states of 1 GPU(s) unused" in lines[0]
    assert f"seed {SEED} and epoch 2" in lines[0]
    # re-seeded from the seed and the epoch: the same resume draws the same numbers
    _, again = train(kind, digits, twin)
    assert all(torch.equal(v, again[k]) for k, v in weights.items())


@pytest.mark.parametrize("kind", ["pretrain", "baseline"])
@pytest.mark.parametrize("gpus", [1, 2])
def test_a_cpu_checkpoint_resumes_where_cuda_is_seen(
    kind, gpus, digits, tmp_path, monkeypatch, caplog
):
    assert train(kind, digits, tmp_path, stop_after=2)[0] == [1, 2]
    if gpus == 2:  # written on one GPU, resumed on two
        for name in ("last.pt", "prev.pt"):
            rewrite(tmp_path / name, rng_cuda=[philox_state(9, 0)])
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(torch.cuda, "is_available", seen_by_ltsweep(True))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [philox_state(1, 0)] * gpus)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", recorder(calls, "set"))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", recorder(calls, "seed"))

    with caplog.at_level(logging.WARNING):
        seen, _ = train(kind, digits, tmp_path)
    assert seen == [3]
    assert not (tmp_path / ".quarantine").exists()
    assert calls == [("seed", reseed_value(SEED, 2, 0))]
    lines = resumed_lines(caplog)
    assert len(lines) == 1 and "CUDA generators re-seeded" in lines[0], lines
    saved = 0 if gpus == 1 else 1
    assert f"states saved for {saved} GPU(s), {gpus} here" in lines[0]


def test_cuda_states_of_as_many_gpus_are_restored_exactly(digits, tmp_path, monkeypatch, caplog):
    assert train("baseline", digits, tmp_path, stop_after=2)[0] == [1, 2]
    states = [philox_state(7, 0), philox_state(8, 0)]
    for name in ("last.pt", "prev.pt"):
        rewrite(tmp_path / name, rng_cuda=states)
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(torch.cuda, "is_available", seen_by_ltsweep(True))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", recorder(calls, "set"))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", recorder(calls, "seed"))
    with caplog.at_level(logging.WARNING):
        assert train("baseline", digits, tmp_path)[0] == [3]
    assert [c[0] for c in calls] == ["set"]
    assert all(torch.equal(a, b) for a, b in zip(calls[0][1], states, strict=True))
    assert resumed_lines(caplog) == []


def test_a_damaged_generator_state_is_still_damage(digits, tmp_path):
    """Only a state of another device type's size is re-seeded: a CPU generator state of the
    right size that torch refuses still sets the checkpoint aside."""
    assert train("baseline", digits, tmp_path, stop_after=2)[0] == [1, 2]
    blob = torch.load(tmp_path / "last.pt", weights_only=True)
    bad = torch.zeros_like(blob["order_gen"])
    rewrite(tmp_path / "last.pt", order_gen=bad)
    seen, _ = train("baseline", digits, tmp_path)
    assert seen == [2, 3]  # from prev.pt (epoch 1)
    assert (tmp_path / ".quarantine").is_dir()
