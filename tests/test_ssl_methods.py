"""Each SSL method really pre-trains through the shared loop, and resumes bit-identically.

Real data (scikit-learn's digits at 16x16), the real narrow ResNet18 (width 8), small heads
and one CPU thread, so every test stays within seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from ltsweep.data.digits import load_digits_dataset
from ltsweep.data.imbalance import long_tail_indices
from ltsweep.models.resnet import build_encoder
from ltsweep.selfsup.base import SSLMethod, build_method
from ltsweep.selfsup.loop import Batches, PretrainState, pretrain
from ltsweep.ssl_config import SSL_SETTINGS, SSLSettings

METHODS = ["simsiam", "simclr", "byol", "barlow"]
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The machine is shared: one intra-op thread, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> Batches:
    ds = load_digits_dataset(image_size=16)
    index = long_tail_indices(ds.train.labels, ds.num_classes, gamma=1.0, seed=0)
    return Batches(ds.train, index, ds.test, ds.num_classes, ds.mean, ds.std)


def small_settings(name: str, **overrides: object) -> SSLSettings:
    fields: dict[str, object] = dict(
        proj_hidden=128, proj_dim=128, batch_size=128, warmup_epochs=1, checkpoint_every=100
    )
    if name in ("simsiam", "byol"):
        fields["pred_hidden"] = 64
    fields.update(overrides)
    return SSL_SETTINGS[name](**fields)


def build(name: str, settings: SSLSettings, seed: int) -> SSLMethod:
    torch.manual_seed(seed)
    return build_method(name, build_encoder(width=8), settings)


@pytest.mark.parametrize("name", METHODS)
def test_pretrain_learns_on_digits(name: str, digits: Batches, tmp_path: Path) -> None:
    settings = small_settings(name, epochs=4, knn_every=4)
    state = pretrain(build(name, settings, 0), digits, settings, CPU, tmp_path, seed=0)
    assert state.epoch == 4 and len(state.loss_history) == 4
    assert all(np.isfinite(state.loss_history))
    # The objective is being optimised (every method's loss falls over these 4 epochs) ...
    assert state.loss_history[-1] < state.loss_history[0]
    # ... and the features classify far above chance (10 %). Generous on purpose: on digits
    # a randomly initialised encoder already reaches ~58 %, so this guards against collapse
    # (a collapsed encoder drops to ~10 %), not against slow learning.
    assert state.knn_history and state.knn_history[-1][0] == 4
    assert state.knn_history[-1][1] > 0.3
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "encoder-epoch00004.pt").is_file()


class Killed(Exception):
    """Stands in for the process being killed right after a checkpoint."""


@pytest.mark.parametrize("name", METHODS)
def test_resume_is_bit_identical(name: str, digits: Batches, tmp_path: Path) -> None:
    # 512 images, 4 steps per epoch: enough to exercise the schedule, the EMA and the RNGs.
    data = Batches(
        digits.train, digits.index[:512], digits.test, digits.num_classes, digits.mean, digits.std
    )
    epochs, kill_after = 3, 1
    settings = small_settings(name, epochs=epochs, checkpoint_every=1, knn_every=100)

    a = build(name, settings, seed=0)
    state_a = pretrain(a, data, settings, CPU, tmp_path / "a", seed=7)

    def kill(state: PretrainState) -> None:
        if state.epoch == kill_after:
            raise Killed

    with pytest.raises(Killed):
        pretrain(
            build(name, settings, seed=0),
            data,
            settings,
            CPU,
            tmp_path / "b",
            seed=7,
            on_epoch=kill,
        )
    # The restarted process builds a fresh method. It is seeded differently from run A on
    # purpose: a stricter test, since then everything that matters must come from the
    # checkpoint (weights, optimiser, BYOL's target, RNGs), nothing from the constructor.
    b = build(name, settings, seed=123)
    seen: list[int] = []
    state_b = pretrain(
        b, data, settings, CPU, tmp_path / "b", seed=7, on_epoch=lambda s: seen.append(s.epoch)
    )

    assert seen == list(range(kill_after + 1, epochs + 1))  # resumed, not restarted
    assert state_b.loss_history == state_a.loss_history
    assert state_b.knn_history == state_a.knn_history
    assert state_b.step == state_a.step
    sd_a, sd_b = a.state_dict(), b.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), k
    ex_a, ex_b = a.extra_state(), b.extra_state()
    assert ex_a.keys() == ex_b.keys()
    if name == "byol":
        assert ex_a  # the target network is part of the checkpoint
    for k in ex_a:
        assert torch.equal(ex_a[k], ex_b[k]), k
