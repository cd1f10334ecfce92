"""The model, each SSL loss and the stacked fine-tune keep to one device: run on fake CUDA
tensors (`FakeTensorMode`, no GPU needed), a tensor left on the CPU inside them would raise
("found two different devices"), and everything they return is on CUDA.

Fake tensors carry shapes, dtypes and devices but no data, so what needs a real CUDA context
(autograd's backward, fused optimiser kernels) is covered by `pytest -m gpu`; the linear and
last-FC fine-tunes compute their gradients by hand and run whole here.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ltsweep.data import symmetric_noise
from ltsweep.train.finetune import HeadSpec, Trial, train_stacked
from ltsweep.train.selfsup.base import REGISTRY

pytestmark = pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")


def fake_cuda() -> FakeTensorMode:
    return FakeTensorMode(allow_non_fake_inputs=True)


#: run in a fresh interpreter per method: BYOL deep-copies its online network into the
#: target, and a deep copy of fake tensors leaves torch's fake-tensor state unsafe to reuse
#: in the same process (a later model's construction can crash it)
_SSL_ON_FAKE_CUDA = """
import sys, torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from ltsweep.models.resnet import build_encoder
from ltsweep.sweep.ssl_settings import SSL_SETTINGS
from ltsweep.train.selfsup.base import build_method
name = sys.argv[1]
with FakeTensorMode(allow_non_fake_inputs=True), torch.device("cuda"):
    method = build_method(name, build_encoder(width=4), SSL_SETTINGS[name]())
    x1, x2 = torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)
    loss = method.loss(x1, x2)
    method.after_step(0.5)  # BYOL's target update reads both networks
    features = method.encoder(x1)
assert isinstance(loss, FakeTensor) and loss.device.type == "cuda" and loss.dim() == 0, loss
assert features.device.type == "cuda" and features.shape == (8, 32), features
tensors = [*method.parameters(), *method.buffers(), *method.extra_state().values()]
assert {t.device.type for t in tensors} == {"cuda"}, {t.device.type for t in tensors}
print("ok", name)
"""


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_each_ssl_method_computes_its_loss_on_cuda(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _SSL_ON_FAKE_CUDA, name],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and f"ok {name}" in done.stdout, done.stderr[-3000:]


def test_a_mixed_device_would_be_caught() -> None:
    """The check has teeth: a CPU tensor meeting a CUDA one inside the mode raises."""
    with fake_cuda(), pytest.raises(RuntimeError, match="device"):
        torch.ones(3, device="cuda") + torch.ones(3, device="cpu").expand(2, 3)


@pytest.mark.parametrize("mode", ["linear", "last"])
def test_the_stacked_fine_tune_trains_on_cuda(mode: str) -> None:
    classes, dim, hidden = 4, 16, 32
    gen = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(64, dim, generator=gen), torch.randn(20, dim, generator=gen)
    labels = np.arange(64) % classes
    head_init = {
        "w1": torch.randn(hidden, dim, generator=gen),
        "b1": torch.zeros(hidden),
        "bn_weight": torch.ones(hidden),
        "bn_bias": torch.zeros(hidden),
        "bn_mean": torch.zeros(hidden),
        "bn_var": torch.ones(hidden),
    }
    trials = [
        Trial(
            symmetric_noise(labels, classes, 0.2, s).labels,
            loss,
            1e-2,
            1e-4,
            s,
            1.0,
            4.0,
            math.log(classes),
        )
        for s in (0, 1)
        for loss in ("ce", "la+sl")
    ]
    with fake_cuda():
        on_gpu = {k: v.to("cuda") for k, v in head_init.items()}
        pred = train_stacked(
            train_x.to("cuda"), test_x.to("cuda"), classes, HeadSpec(mode, 1, 32), trials, on_gpu
        )
    assert pred.device.type == "cuda" and pred.shape == (4, 20) and pred.dtype == torch.int64
