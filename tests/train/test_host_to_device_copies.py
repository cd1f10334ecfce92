"""A training step copies at most its batch from the host to the device, and nothing when the
data set lives on the device: no constant (mean/std, colour matrices, masks, labels,
permutations) is rebuilt on the host and sent over every step.

How this is proven without a GPU: `TransferCounter`, a `TorchFunctionMode`, counts every call
that would copy host memory onto the unit's device on a GPU: `Tensor.to` / `Tensor.cuda`
naming the unit's device (or a tensor on it) whose source is on the host, `torch.tensor` /
`torch.as_tensor` with that device, and `Tensor.copy_` from the host to another device. On
the CPU the unit's device *is* the host, so a request to move a host tensor "to the device"
is counted although it moves nothing, exactly where a GPU would copy; the one helper whose
CPU path skips the call (`to_device`, pinned + asynchronous on CUDA) is replaced by its GPU
path, `x.to(device)`. Device-side factories (`zeros`, `arange`, `eye`, `rand` with
`device=`) copy nothing and are not counted. A global optimiser hook snapshots the count at
every optimiser step: the copies between two consecutive steps of one optimiser are those of
one whole training step. With a real GPU (`-m gpu`) the same counter counts real copies
(source on the CPU, target on CUDA).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.overrides import TorchFunctionMode

from ltsweep.data import long_tail_indices
from ltsweep.models.resnet import build_encoder
from ltsweep.sweep.ssl_settings import SSL_SETTINGS
from ltsweep.train import batches
from ltsweep.train.baselines.common import Backbone, Budget, TrainSet
from ltsweep.train.baselines.dividemix import DivideMixParams, train_dividemix
from ltsweep.train.baselines.elr_plus import ELRPlusParams, train_elr_plus
from ltsweep.train.baselines.supervised import LossParams, train_supervised
from ltsweep.train.selfsup.base import build_method
from ltsweep.train.selfsup.loop import Batches, pretrain

pytestmark = pytest.mark.usefixtures("one_thread")
N, BATCH = 96, 32  # three steps an epoch


def _device_of(args: tuple, kwargs: dict) -> torch.device | None:
    """The target device of a `Tensor.to(...)` call, if it names one."""
    target = kwargs.get("device")
    for a in args[1:]:
        if isinstance(a, torch.Tensor):
            return a.device
        if isinstance(a, (str, torch.device)):
            target = a
    return None if target is None else torch.device(target)


class TransferCounter(TorchFunctionMode):
    """Counts host-to-device copies toward `device` (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.count = 0
        self.where: list[str] = []

    def _toward(self, target: torch.device | None) -> bool:
        return target is not None and torch.device(target).type == self.device.type

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        copy = False
        if func is torch.Tensor.to:
            copy = args[0].device.type == "cpu" and self._toward(_device_of(args, kwargs))
        elif func is torch.Tensor.cuda:
            copy = args[0].device.type == "cpu"
        elif func in (torch.tensor, torch.as_tensor):
            copy = self._toward(kwargs.get("device"))
        elif func is torch.Tensor.copy_:
            copy = args[1].device.type == "cpu" and args[0].device.type != "cpu"
        if copy:
            self.count += 1
            import traceback

            frame = traceback.extract_stack(limit=3)[0]
            self.where.append(f"{Path(frame.filename).name}:{frame.lineno}")
        return func(*args, **kwargs)


def per_step_copies(run, device: torch.device, monkeypatch) -> list[int]:
    """Run `run()` under the counter; the copies of each whole step between two consecutive
    optimiser steps of the same optimiser."""
    if device.type == "cpu":  # to_device's GPU path: the batch copy is a `.to(device)`
        monkeypatch.setattr(batches, "to_device", lambda x, d: x.to(d))
    counter = TransferCounter(device)
    marks: list[tuple[int, int, list[str]]] = []

    def hook(opt, args, kwargs):
        marks.append((id(opt), counter.count, list(counter.where)))

    handle = register_optimizer_step_post_hook(hook)
    try:
        with counter:
            run()
    finally:
        handle.remove()
    steps = []
    for (a, n0, _), (b, n1, where) in zip(marks, marks[1:], strict=False):
        if a == b:
            steps.append(n1 - n0)
            if n1 - n0 > 1:
                print("copies of one step at", where[n0:n1])
    assert len(steps) >= 2
    return steps


def devices() -> list:
    gpu = pytest.mark.gpu
    return [
        pytest.param(torch.device("cpu"), id="cpu"),
        pytest.param(
            torch.device("cuda"),
            id="cuda",
            marks=[
                gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
            ],
        ),
    ]


def resident(monkeypatch, on: bool) -> None:
    monkeypatch.setattr(batches, "keeps_on_device", lambda images, index, device: on)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("on_device", [False, True], ids=["host-data", "data-on-device"])
def test_a_pretrain_step_copies_only_its_batch(digits, tmp_path, monkeypatch, device, on_device):
    resident(monkeypatch, on_device)
    index = long_tail_indices(digits.train.labels, 10, 1.0, 0)[:N]
    data = Batches(digits.train, index, digits.test, 10, digits.mean, digits.std)
    settings = SSL_SETTINGS["simclr"](
        proj_hidden=32, proj_dim=16, batch_size=BATCH, epochs=1, knn_every=100
    )
    torch.manual_seed(0)
    method = build_method("simclr", build_encoder(width=4), settings)

    def run():
        pretrain(method, data, settings, device, tmp_path, seed=1, amp=False)

    assert per_step_copies(run, device, monkeypatch) == [0 if on_device else 1] * 2


def tiny_set(digits) -> TrainSet:
    index = np.sort(long_tail_indices(digits.train.labels, 10, 1.0, 0)[:N])
    labels = digits.train.labels[index]
    return TrainSet(digits.train, index, labels, labels, 10, digits.mean, digits.std)


BASELINES = {
    "ce": lambda *a, **k: train_supervised(*a[:4], LossParams("la+sl"), *a[4:], **k),
    "elr+": lambda *a, **k: train_elr_plus(*a[:4], ELRPlusParams(), *a[4:], **k),
    "dividemix": lambda *a, **k: train_dividemix(
        *a[:4], DivideMixParams(warmup_epochs=1, mix_batch_size=16), *a[4:], **k
    ),
}


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("on_device", [False, True], ids=["host-data", "data-on-device"])
@pytest.mark.parametrize("name", list(BASELINES))
def test_a_baseline_step_copies_only_its_batch(
    digits, tmp_path, monkeypatch, device, on_device, name
):
    resident(monkeypatch, on_device)
    epochs = 2 if name == "dividemix" else 1  # its second epoch is a MixMatch epoch
    budget = Budget(epochs, BATCH, "sgd", 0.9, 0.05, 5e-4, "cosine", 2, 0.5)
    backbone = Backbone("resnet18", 4, "cifar")

    def run():
        BASELINES[name](tiny_set(digits), digits.test, backbone, budget, device, tmp_path, 3)

    assert set(per_step_copies(run, device, monkeypatch)) == {0 if on_device else 1}


def test_constants_are_made_once_per_device():
    from ltsweep.augment import Normalize, device_constant

    cpu = torch.device("cpu")
    a = Normalize((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), cpu)
    b = Normalize((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), cpu)
    assert a.mean.data_ptr() == b.mean.data_ptr()  # the same tensor, not a new copy
    assert device_constant("gray", cpu, torch.float32) is device_constant("gray", cpu)
    assert torch.allclose(
        device_constant("rgb2yiq", cpu) @ device_constant("yiq2rgb", cpu), torch.eye(3), atol=1e-6
    )


def test_the_counter_sees_what_a_step_used_to_copy():
    """The patterns the steps used to repeat every step are counted; device-side factories
    and dtype casts are not."""
    cpu = torch.device("cpu")
    x = torch.zeros(2, 3)
    with TransferCounter(cpu) as counter:
        torch.tensor([0.299, 0.587, 0.114]).to(x.device, x.dtype)  # a colour matrix
        torch.tensor((0.5, 0.5, 0.5), device=cpu)  # a mean
        torch.cat([torch.arange(2, 4), torch.arange(0, 2)]).to(x.device)  # SimCLR's partners
        torch.randperm(4).to(cpu)  # a batch's positions
        torch.as_tensor(np.arange(3), device=cpu)  # labels
        assert counter.count == 5
        torch.zeros(3, device=cpu), torch.eye(4, dtype=torch.bool, device=cpu)
        torch.arange(4, device=cpu), x.to(torch.float64), x.float()
    assert counter.count == 5
