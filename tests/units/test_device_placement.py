"""A unit runs where its plan says: on CUDA or failing loudly, on the CPU without touching a GPU,
and its row names the node that computed it. No GPU here: torch.cuda and nvidia-smi are faked."""

from __future__ import annotations

import io
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ltsweep import gpu_probe, placement
from ltsweep.gpu_probe import GpuInfo
from ltsweep.store import results as results_mod
from ltsweep.store.results import load_results
from ltsweep.sweep.schema import parse_sweep
from ltsweep.train.baselines import loop
from ltsweep.train.baselines.common import Outcome
from ltsweep.units import baseline as unit_mod
from ltsweep.units.base import RunContext
from ltsweep.units.baseline import plan_baselines, run_baseline

pytestmark = pytest.mark.usefixtures("one_thread")

TF32_FLAGS = (
    (torch.backends.cuda.matmul, "allow_tf32"),
    (torch.backends.cudnn, "allow_tf32"),
    (torch.backends.cudnn, "benchmark"),
)
OLD_DRIVER = GpuInfo("NVIDIA A100-SXM4-40GB", (8, 0), 40960, "550.54.15")


@pytest.fixture(autouse=True)
def clean_state(monkeypatch, cuda_backend_flags):
    """CUDA_VISIBLE_DEVICES and the TF32 flags as they were after each test (a CPU unit sets
    the one, a CUDA unit the others, in this very process); TF32 off to start with."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for module, name in TF32_FLAGS:
        setattr(module, name, False)


def _sweep(device: str, methods=("ce",), gpus: float = 1):
    """Baselines ask for what pre-trains ask for (no `resources.baseline`): `gpus` GPUs."""
    return parse_sweep(
        {
            "name": "placed",
            "data": {"dataset": "digits", "image_size": 16},
            "backbone": {"width": 8},
            "grid": {"gamma": [10], "noise": [0.2], "seeds": [0], "data_seeds": [0]},
            "baselines": {"methods": list(methods), "epochs": 1, "batch_size": 64},
            "execution": {"device": device},
            "resources": {"pretrain": {"cpu": 1, "gpu": gpus}},
        }
    )


def _flags() -> tuple[bool, ...]:
    return tuple(getattr(module, name) for module, name in TF32_FLAGS)


def _fake_gpu_node(monkeypatch, count: int = 2) -> None:
    """A node whose torch sees `count` GPUs, CUDA not initialised yet."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)


# --- a unit planned on CUDA, on a worker that sees none -----------------------------------------


def test_a_cuda_unit_on_a_worker_without_cuda_fails_with_one_line(tmp_path, monkeypatch):
    """The real unit through the real trainable: a failed row whose error is the one line that
    names the node, the build, the driver (too old for CUDA 13), CUDA_VISIBLE_DEVICES and what
    torch saw; the driver's line for the failed trial says the same."""
    from ltsweep.engine import ray_driver
    from ltsweep.engine.progress import Progress
    from ltsweep.engine.tune_callbacks import ProgressCallback
    from ltsweep.engine.work_queue import FAILED

    monkeypatch.setattr(gpu_probe, "visible_gpus", lambda: (OLD_DRIVER,))
    monkeypatch.setattr(socket, "gethostname", lambda: "node3")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    sweep = _sweep("cuda")
    (unit,) = plan_baselines(sweep)
    assert unit.settings["execution"]["device_type"] == "cuda"  # the plan put it on CUDA
    config = unit_mod.config(unit)
    reports: list[dict] = []
    monkeypatch.setattr(ray_driver.tune, "report", reports.append)
    blob = {
        "sweep": sweep.model_dump(mode="json"),
        "run_dir": str(tmp_path / "run"),
        "cache_dir": str(tmp_path / "cache"),
    }
    ray_driver._trainable(config, blob)

    (report,) = reports
    message = report[FAILED]
    assert message.startswith("DeviceUnavailable: unit planned on CUDA but node3 sees no GPU: ")
    for part in (
        f"torch {torch.__version__}",
        "driver 550.54.15 (CUDA 13 needs 580+)",
        "CUDA_VISIBLE_DEVICES=''",
        "torch.cuda.is_available() False",
        "device_count 0",
    ):
        assert part in message, part
    assert "\n" not in message

    df = load_results(tmp_path / "run", include_failed=True)
    assert list(df["status"]) == ["failed"] and df["error"][0] == message
    assert df["host"][0] == "node3"
    assert not (tmp_path / "cache" / "baseline" / unit.key).exists()  # nothing trained
    assert _flags() == (False, False, False)

    # the driver's terminal line for the failed trial: with the progress view, and without
    trial = SimpleNamespace(trial_id="t1", config=config, last_result=report)
    for progress in (Progress({"baseline": 1}, stream=io.StringIO()), None):
        stream = io.StringIO()
        callback = ProgressCallback(progress, tmp_path / "run", stream)
        callback.on_trial_start(0, [], trial)
        callback.on_trial_complete(0, [], trial)
        out = (progress.stream if progress else stream).getvalue()
        (line,) = [ln for ln in out.splitlines() if "failed:" in ln]
        assert line == f"ltsweep: baseline-{unit.key[:10]} failed: {message}"
        if progress:
            assert progress.failed["baseline"] == 1


def test_the_line_without_nvidia_smi_and_a_cpu_only_build(monkeypatch):
    monkeypatch.setattr(gpu_probe, "visible_gpus", lambda: ())
    monkeypatch.setattr(placement.shutil, "which", lambda name: None)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(socket, "gethostname", lambda: "login1")
    with pytest.raises(placement.DeviceUnavailable) as err:
        placement.unit_device({"device_type": "cuda"}, "auto")
    line = str(err.value)
    assert line.startswith("unit planned on CUDA but login1 sees no GPU: ")
    assert "(a CPU-only build), no nvidia-smi, CUDA_VISIBLE_DEVICES=unset" in line
    assert "\n" not in line and isinstance(err.value, RuntimeError)


@pytest.mark.parametrize(
    ("driver", "cuda", "hint"),
    [
        ("550.54", "13.0", " (CUDA 13 needs 580+)"),
        ("580.65", "13.0", ""),
        ("470.1", "12.4", " (CUDA 12 needs 525+)"),
        ("535.1", "12.4", ""),
        ("535.1", None, ""),
        ("odd", "12.4", ""),
    ],
)
def test_driver_hint(driver, cuda, hint):
    assert placement.driver_hint(driver, cuda) == hint


# --- a CPU unit on a node with GPUs -------------------------------------------------------------


def test_a_gpu_0_unit_on_a_gpu_node_stays_on_the_cpu(tmp_path, monkeypatch):
    """`device: auto` with no GPU in the baseline's resources: the plan says CPU, and so does
    the worker, though its torch sees two GPUs; the GPUs are hidden, TF32 left alone."""
    _fake_gpu_node(monkeypatch)
    sweep = _sweep("auto", gpus=0)
    (unit,) = plan_baselines(sweep)
    assert unit.settings["execution"]["device_type"] == "cpu"
    seen: dict[str, object] = {}
    real_fit = loop.fit

    def spy_fit(method, train, test, backbone, budget, device, *args, **kwargs):
        seen["device"] = device
        seen["hidden"] = placement.os.environ.get("CUDA_VISIBLE_DEVICES")
        out = real_fit(method, train, test, backbone, budget, device, *args, **kwargs)
        seen["logits"] = out.test_logits.device
        return out

    monkeypatch.setattr(loop, "fit", spy_fit)
    ctx = RunContext(sweep, tmp_path / "run", tmp_path / "cache")
    row = run_baseline(ctx, unit)
    assert row["status"] == "ok" and 0 <= row["acc"] <= 1
    assert seen["device"] == torch.device("cpu") and seen["logits"].type == "cpu"
    assert seen["hidden"] == ""
    assert (ctx.cache_dir / "baseline" / unit.key / "last.pt").is_file()
    assert _flags() == (False, False, False)


def test_unit_device_cases(monkeypatch):
    """CPU: GPUs hidden, unless CUDA is already up (then the variable is read already); CUDA:
    TF32 and cuDNN autotuning on; no resolved dict: `execution.device` as before."""
    _fake_gpu_node(monkeypatch)
    assert placement.unit_device({"device_type": "cpu"}, "auto") == torch.device("cpu")
    assert placement.os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert _flags() == (False, False, False)

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert placement.unit_device({"device_type": "cpu"}, "cuda") == torch.device("cpu")
    assert "CUDA_VISIBLE_DEVICES" not in placement.os.environ

    assert placement.unit_device({"device_type": "cuda"}, "cpu").type == "cuda"
    assert _flags() == (True, True, True)

    for module, name in TF32_FLAGS:
        setattr(module, name, False)  # clean_state sets them back
    assert placement.unit_device(None, "auto").type == "cuda"  # an older unit: as before
    assert placement.unit_device(None, "cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert placement.unit_device(None, "auto") == torch.device("cpu")
    with pytest.raises(placement.DeviceUnavailable):
        placement.unit_device(None, "cuda")


def test_a_cuda_finetune_group_on_a_worker_without_cuda_fails_with_the_line(tmp_path, monkeypatch):
    """Fine-tunes carry no resolved dict: where they run comes from the same settings
    (`device: cuda`), and their failed rows say why, naming the worker."""
    from ltsweep.planning.plan import make_plan
    from ltsweep.units.finetune import run_finetunes

    monkeypatch.setattr(gpu_probe, "visible_gpus", lambda: ())
    monkeypatch.setattr(socket, "gethostname", lambda: "node2")
    sweep = parse_sweep(
        {
            "name": "ft",
            "data": {"dataset": "digits", "image_size": 16},
            "grid": {"gamma": [10], "noise": [0.2], "seeds": [0, 1], "data_seeds": [0]},
            "ssl": {"simsiam": {"epochs": 1}},
            "execution": {"device": "cuda"},
        }
    )
    ctx = RunContext(sweep, tmp_path / "run", tmp_path / "cache")
    units = make_plan(sweep).finetunes
    with pytest.raises(placement.DeviceUnavailable, match="node2 sees no GPU"):
        run_finetunes(ctx, units, "ft")
    df = load_results(ctx.run_dir, include_failed=True)
    assert len(df) == len(units) and set(df["status"]) == {"failed"}
    assert all(e.startswith("DeviceUnavailable: unit planned on CUDA") for e in df["error"])
    assert set(df["host"]) == {"node2"}


# --- the host column ----------------------------------------------------------------------------


def test_a_row_names_the_node_that_computed_it(tmp_path, monkeypatch):
    """The worker's hostname (node2) is in the row, not the one of the process that happens
    to build or write rows (the store's own look-up answers node1 here)."""
    monkeypatch.setattr(socket, "gethostname", lambda: "node2")
    monkeypatch.setattr(results_mod, "socket", SimpleNamespace(gethostname=lambda: "node1"))
    sweep = _sweep("cpu")
    (unit,) = plan_baselines(sweep)

    def fake_train(ctx, unit, train):
        from ltsweep.data.cell import dataset_for

        n = len(dataset_for(ctx.sweep).test.labels)
        return Outcome(torch.zeros(n, 10), 1, 0.0, [0.0], {})

    monkeypatch.setattr(unit_mod, "train_unit", fake_train)
    ctx = RunContext(sweep, tmp_path / "run", tmp_path / "cache")
    row = run_baseline(ctx, unit)
    assert row["host"] == "node2"
    df = load_results(ctx.run_dir)
    assert list(df["host"]) == ["node2"] and np.isclose(df["acc"][0], 0.1)
