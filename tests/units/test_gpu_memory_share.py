"""Each unit caps its process at its GPU share, and what a finished unit held is handed back.

No GPU here: `torch.cuda.is_available` is faked so that the unit picks CUDA, and
`torch.cuda.set_per_process_memory_fraction` / `empty_cache` are spies. Each unit is stopped
right after its device is chosen (the next step raises), so nothing runs on the fake GPU.
"""

from __future__ import annotations

import pytest
import torch

from ltsweep import gpu_memory
from ltsweep.sweep.schema import parse_sweep
from ltsweep.units.base import RunContext


class Stop(Exception):
    """Raised by the step after the device is chosen: the test has seen what it needs."""


def _stop(*args, **kwargs):
    raise Stop


@pytest.fixture
def fractions(monkeypatch, cuda_backend_flags) -> list[tuple[float, torch.device]]:
    """A node whose torch sees a GPU; the calls of set_per_process_memory_fraction."""
    calls: list[tuple[float, torch.device]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(
        torch.cuda,
        "set_per_process_memory_fraction",
        lambda fraction, device=None: calls.append((fraction, torch.device(device))),
    )
    return calls


def _ctx(tmp_path) -> RunContext:
    sweep = parse_sweep(
        {
            "name": "shares",
            "data": {"dataset": "digits", "image_size": 16},
            "backbone": {"width": 8},
            "grid": {"gamma": [10], "noise": [0.2], "seeds": [0]},
            "baselines": {"methods": ["ce"], "epochs": 1},
            "resources": {
                "pretrain": {"cpu": 1, "gpu": 1},
                "finetune": {"cpu": 1, "gpu": 0.25},
                "baseline": {"cpu": 1, "gpu": 0.5},
            },
            "execution": {"device": "auto"},
        }
    )
    return RunContext(sweep, tmp_path / "run", tmp_path / "cache")


def test_cap_share_is_the_share_on_cuda_and_nothing_on_the_cpu(fractions):
    cuda = torch.device("cuda")
    assert gpu_memory.cap_share(cuda, 0.25) == 0.25
    assert gpu_memory.cap_share(cuda, 2) == 1.0  # one device per unit: at most all of it
    assert gpu_memory.cap_share(torch.device("cpu"), 0.5) is None
    assert gpu_memory.cap_share(cuda, 0) is None
    assert fractions == [(0.25, cuda), (1.0, cuda)]


def test_a_pretrain_caps_itself_at_its_share(tmp_path, monkeypatch, fractions):
    from ltsweep.data import cell
    from ltsweep.planning.plan import make_plan
    from ltsweep.units.pretrain import run_pretrain

    ctx = _ctx(tmp_path)
    monkeypatch.setattr(cell, "dataset_for", _stop)  # the step after the device
    with pytest.raises(Stop):
        run_pretrain(ctx, make_plan(ctx.sweep).pretrains[0])
    assert [f for f, _ in fractions] == [1.0]
    assert fractions[0][1].type == "cuda"


def test_a_finetune_group_caps_itself_at_its_share(tmp_path, monkeypatch, fractions):
    from ltsweep.planning.plan import make_plan
    from ltsweep.train import finetune as stacked
    from ltsweep.units.finetune import run_finetunes

    ctx = _ctx(tmp_path)
    monkeypatch.setattr(stacked, "stored_features", _stop)
    with pytest.raises(Stop):
        run_finetunes(ctx, make_plan(ctx.sweep).finetunes[:1], "ft-test")
    assert [f for f, _ in fractions] == [0.25]


def test_a_baseline_caps_itself_at_its_share(tmp_path, monkeypatch, fractions):
    from ltsweep.train.baselines import loop
    from ltsweep.units.baseline import plan_baselines, train_unit

    ctx = _ctx(tmp_path)
    monkeypatch.setattr(loop, "fit", _stop)
    with pytest.raises(Stop):
        train_unit(ctx, plan_baselines(ctx.sweep)[0], train=None)
    assert [f for f, _ in fractions] == [0.5]


def test_release_empties_the_cache_after_a_cuda_unit(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpu_memory.release()
    assert emptied == []  # no CUDA: nothing to hand back
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu_memory.release(torch.device("cpu"))
    assert emptied == []
    gpu_memory.release(torch.device("cuda"))
    gpu_memory.release()
    assert emptied == [True, True]


def test_the_feature_cache_keeps_features_on_the_cpu(tmp_path, monkeypatch):
    """Reused workers keep up to two pre-trains' features between trials: in host memory,
    so no trial's GPU share holds another's features; each call gets its own device copy."""
    from ltsweep.store import cache
    from ltsweep.train import finetune as stacked

    feats = {"train": torch.ones(4, 3), "test": torch.zeros(2, 3), "knn_acc": torch.tensor(0.5)}
    monkeypatch.setattr(cache, "load_features", lambda *a, **k: feats)
    moved = []
    monkeypatch.setattr(stacked, "to_device", lambda x, dev: moved.append(dev) or x)
    stacked._features_on_cpu.cache_clear()
    try:
        a = stacked.stored_features(str(tmp_path), "k", 1, "cuda")
        b = stacked.stored_features(str(tmp_path), "k", 1, "cuda")
        cached = stacked._features_on_cpu(str(tmp_path), "k", 1)
    finally:
        stacked._features_on_cpu.cache_clear()
    assert all(t.device.type == "cpu" for t in cached.values())
    assert moved == [torch.device("cuda")] * 4  # train and test, on each call
    assert a["knn_acc"] is b["knn_acc"]
