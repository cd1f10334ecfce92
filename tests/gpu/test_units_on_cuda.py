"""One epoch of every unit kind on a real CUDA device, at toy size: each SSL method's
pre-train, a stacked fine-tune group and a baseline, directly and through `ltsweep run`.

What the fakes of the CPU tests cannot prove: that the kernels exist for this card, that the
precision `auto` picks for it trains (bf16 from capability 8.0, else fp16 with a scaler),
and that nothing ends on the CPU or non-finite. Skipped, with the reason, without a GPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import ltsweep
from ltsweep.data.digits import load_digits_dataset
from ltsweep.data.imbalance import long_tail_indices
from ltsweep.device import Speed
from ltsweep.models.resnet import build_encoder
from ltsweep.sweep import precision
from ltsweep.sweep.schema import ExecutionSettings
from ltsweep.sweep.ssl_settings import SSL_SETTINGS
from ltsweep.train.finetune import HeadSpec, Trial, train_stacked
from ltsweep.train.selfsup.base import build_method
from ltsweep.train.selfsup.loop import Batches, pretrain
from tests.helpers import ltsweep_cmd

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="no CUDA device: torch.cuda.is_available() is False",
    ),
]
METHODS = ["simclr", "simsiam", "byol", "barlow"]


def _finite_on_cuda(tensors: dict[str, torch.Tensor], what: str) -> None:
    for name, t in tensors.items():
        assert t.device.type == "cuda", f"{what}: {name} is on {t.device}"
        if t.is_floating_point():
            assert torch.isfinite(t).all(), f"{what}: {name} is not finite"


def test_one_epoch_of_each_unit_kind_on_cuda(tmp_path: Path) -> None:
    cuda = torch.device("cuda")
    speed = Speed.of(precision.resolve(ExecutionSettings(device="cuda"), 1))
    ds = load_digits_dataset(image_size=16)
    index = long_tail_indices(ds.train.labels, ds.num_classes, gamma=10.0, seed=0)
    data = Batches(ds.train, index, ds.test, ds.num_classes, ds.mean, ds.std)

    # pre-train: every SSL method, one epoch, in the precision `auto` gives this card
    for name in METHODS:
        fields: dict = dict(epochs=1, batch_size=64, warmup_epochs=0, proj_hidden=64, proj_dim=64)
        if name in ("simsiam", "byol"):
            fields["pred_hidden"] = 32
        settings = SSL_SETTINGS[name](**fields)
        torch.manual_seed(0)
        method = build_method(name, build_encoder(width=8), settings)
        pretrain(method, data, settings, cuda, tmp_path / name, seed=0, speed=speed)
        _finite_on_cuda(dict(method.state_dict()), f"{name} ({speed.precision})")

    # fine-tune: one stacked group of four trials on features held on the GPU
    g = torch.Generator().manual_seed(0)
    train_x = torch.randn(len(index), 64, generator=g).to(cuda)
    test_x = torch.randn(200, 64, generator=g).to(cuda)
    labels = ds.train.labels[index]
    trials = [
        Trial(labels=np.asarray(labels), loss=loss, lr=0.01, weight_decay=5e-4, seed=s)
        for loss in ("ce", "la+sl")
        for s in (0, 1)
    ]
    preds = train_stacked(train_x, test_x, ds.num_classes, HeadSpec("linear", 1, 64), trials)
    assert preds.device.type == "cuda" and preds.shape == (len(trials), 200)
    assert int(preds.min()) >= 0 and int(preds.max()) < ds.num_classes

    # every unit kind through `ltsweep run` on CUDA: all rows ok, accuracies finite
    sweep = {
        "name": "gpu-epoch",
        "data": {"dataset": "digits", "image_size": 16, "test_per_class": 20},
        "backbone": {"width": 8},
        "grid": {
            "ssl": METHODS,
            "gamma": [10],
            "noise": [0.4],
            "losses": ["ce", "la+sl"],
            "seeds": [0],
        },
        "ssl": {
            name: {
                "epochs": 1,
                "batch_size": 64,
                "warmup_epochs": 0,
                "proj_hidden": 64,
                "proj_dim": 64,
                **({"pred_hidden": 32} if name in ("simsiam", "byol") else {}),
                "finetune": {"epochs": 1, "batch_size": 64},
            }
            for name in METHODS
        },
        "baselines": {"methods": ["ce", "la+sl"], "epochs": 1, "batch_size": 64},
        "resources": {"pretrain": {"cpu": 1, "gpu": 1}, "finetune": {"cpu": 1, "gpu": 1}},
        "execution": {"device": "cuda"},
    }
    path = tmp_path / "gpu-epoch.yaml"
    path.write_text(yaml.safe_dump(sweep))
    run_dir = tmp_path / "run"
    args = ["run", str(path), "--run-dir", str(run_dir), "--cache-dir", str(tmp_path / "cache")]
    out = ltsweep_cmd(*args, "--quiet", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = ltsweep.load_results(run_dir)
    assert len(rows) == len(METHODS) * 2 + 2
    assert set(rows["status"]) == {"ok"}, rows[rows["status"] != "ok"].to_dict("records")
    assert all(math.isfinite(a) for a in rows["acc"])
