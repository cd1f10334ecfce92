"""Precision by GPU: bf16 only where the GPU does it natively (compute capability 8.0+), fp16
with a real loss scaler below it; bf16 below 8.0 and fp16 on the CPU refused in one line
(planning: exit 2, nothing written; worker: before it touches the device); fp16 in the keys,
bf16 and fp32 keys as before; the fp16 step scales the loss in pre-training and in every
baseline, and its scaler's state survives a checkpoint.

No GPU here: the planning host's GPUs are faked through `gpu_probe.visible_gpus`, the worker's
through `torch.cuda.*`; CPU autocast fp16 is no training mode, so the scaler path runs with a
real `GradScaler("cpu", enabled=True)` put in place of `Speed.grad_scaler`'s.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest
import torch

from ltsweep import gpu_probe
from ltsweep.cli import main
from ltsweep.data.imbalance import long_tail_indices
from ltsweep.device import Speed, autocast
from ltsweep.gpu_probe import GpuInfo
from ltsweep.models.resnet import build_encoder
from ltsweep.planning.plan import make_plan
from ltsweep.sweep import precision
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.schema import ExecutionSettings, load_sweep, parse_sweep
from ltsweep.sweep.ssl_settings import SSL_SETTINGS
from ltsweep.train.baselines.common import Backbone, Budget, TrainSet
from ltsweep.train.baselines.dividemix import DivideMixParams, train_dividemix
from ltsweep.train.baselines.elr import ELRParams, train_elr
from ltsweep.train.baselines.elr_plus import ELRPlusParams, train_elr_plus
from ltsweep.train.baselines.supervised import LossParams, train_supervised
from ltsweep.train.selfsup.base import build_method
from ltsweep.train.selfsup.loop import Batches, pretrain
from tests.helpers import REPO

CPU = torch.device("cpu")
V100 = GpuInfo("Tesla V100-SXM2-16GB", (7, 0), 16384, "550.54")
T4 = GpuInfo("Tesla T4", (7, 5), 15360, "550.54")
A100 = GpuInfo("NVIDIA A100-SXM4-40GB", (8, 0), 40960, "550.54")
H100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0), 81559, "550.54")
BACKBONE = Backbone("resnet18", 8, "cifar")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def no_host_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever GPUs the machine running the tests has, none unless a test says so."""
    host_gpus(monkeypatch)


def host_gpus(monkeypatch: pytest.MonkeyPatch, *gpus: GpuInfo) -> None:
    """The planning host's GPUs, as nvidia-smi would report them."""
    monkeypatch.setattr(gpu_probe, "visible_gpus", lambda: tuple(gpus))


def fake_cuda(monkeypatch: pytest.MonkeyPatch, gpu: GpuInfo) -> None:
    """The worker's CUDA device, as torch would report it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: gpu.capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu.name)


# -- planning: what auto resolves to, what is refused ---------------------------------------


@pytest.mark.parametrize(
    ("gpus", "want"),
    [
        ((V100,), "fp16"),
        ((T4,), "fp16"),
        ((A100,), "bf16"),
        ((H100,), "bf16"),
        ((H100, T4), "fp16"),  # the lowest capability among the host's GPUs decides
        ((), "bf16"),  # no GPU on the planning host: 8.0+ assumed
    ],
)
def test_auto_on_cuda_follows_the_capability(monkeypatch, gpus, want) -> None:
    host_gpus(monkeypatch, *gpus)
    got = precision.resolve(ExecutionSettings(), 1)
    assert (got["precision"], got["device_type"]) == (want, "cuda")


def test_capability_7_gives_fp16_with_an_enabled_scaler(monkeypatch) -> None:
    fake_cuda(monkeypatch, V100)  # GradScaler("cuda") disables itself where CUDA is absent
    cuda = torch.device("cuda")
    fp16 = Speed.of(precision.resolve(ExecutionSettings(gpu_capability="7.0"), 1))
    assert fp16.precision == "fp16" and fp16.grad_scaler(cuda).is_enabled()
    bf16 = Speed.of(precision.resolve(ExecutionSettings(gpu_capability="8.0"), 1))
    assert bf16.precision == "bf16" and not bf16.grad_scaler(cuda).is_enabled()
    assert not Speed().grad_scaler(CPU).is_enabled()


def test_the_setting_beats_the_planning_host(monkeypatch) -> None:
    host_gpus(monkeypatch, H100)
    assert precision.resolve(ExecutionSettings(gpu_capability="7.5"), 1)["precision"] == "fp16"
    host_gpus(monkeypatch, V100)
    assert precision.resolve(ExecutionSettings(gpu_capability="8.6"), 1)["precision"] == "bf16"
    # the CPU and amp: false do not look at GPUs
    assert precision.resolve(ExecutionSettings(amp=False), 1)["precision"] == "fp32"
    assert precision.resolve(ExecutionSettings(device="cpu", precision="fp32"), 0)["precision"] == (
        "fp32"
    )


def test_gpu_capability_setting_is_validated() -> None:
    as_number = parse_sweep({"name": "x", "execution": {"gpu_capability": 7.0}})
    assert as_number.execution.gpu_capability == "7.0"  # YAML's `7.0` is a number
    for bad in ("seven", "7", True):
        with pytest.raises(SpecError, match=r"execution\.gpu_capability") as err:
            parse_sweep({"name": "x", "execution": {"gpu_capability": bad}})
        assert "\n" not in str(err.value)
    with pytest.raises(SpecError, match=r"precision: fp16 contradicts amp: false"):
        parse_sweep({"name": "x", "execution": {"precision": "fp16", "amp": False}})


def test_bf16_below_8_and_fp16_on_the_cpu_are_refused(monkeypatch) -> None:
    host_gpus(monkeypatch, V100)
    with pytest.raises(SpecError) as err:
        precision.resolve(ExecutionSettings(precision="bf16"), 1)
    line = str(err.value)
    assert "\n" not in line and line.startswith("execution.precision: bf16")
    assert "Tesla V100-SXM2-16GB" in line and "7.0" in line
    with pytest.raises(SpecError, match=r"^execution\.precision: fp16 .*CPU"):
        precision.resolve(ExecutionSettings(precision="fp16"), 0)
    # bf16 on the CPU and fp16 on CUDA stay allowed wherever the GPU is
    assert precision.resolve(ExecutionSettings(precision="bf16", device="cpu"), 0)
    assert precision.resolve(ExecutionSettings(precision="fp16"), 1)["precision"] == "fp16"


SWEEP = """
name: t
execution: {{precision: {precision}, gpu_capability: "{capability}"{device}}}
resources:
  pretrain: {{cpu: 1, gpu: {gpu}}}
"""


@pytest.mark.parametrize("command", ["run", "plan"])
@pytest.mark.parametrize(
    ("settings", "gpus", "expected"),
    [
        (dict(precision="bf16", capability="7.0", gpu=1), (), ["bf16", "7.0"]),
        (dict(precision="bf16", capability="auto", gpu=1), (T4,), ["bf16", "Tesla T4", "7.5"]),
        (dict(precision="fp16", capability="auto", gpu=0), (A100,), ["fp16", "CPU"]),
    ],
)
def test_cli_refuses_in_one_line_and_writes_nothing(
    tmp_path, capsys, monkeypatch, command, settings, gpus, expected
) -> None:
    host_gpus(monkeypatch, *gpus)
    monkeypatch.delenv("LTSWEEP_DATA", raising=False)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(textwrap.dedent(SWEEP.format(device="", **settings)))
    run_dir = tmp_path / "run"
    (run_dir / "results").mkdir(parents=True)
    (run_dir / "results" / "keep.parquet").write_bytes(b"stored before")
    cache = tmp_path / "cache"
    code = main([command, str(sweep), "--run-dir", str(run_dir), "--cache-dir", str(cache)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"ltsweep: error: {sweep}: execution.precision: ")
    assert all(word in err[0] for word in expected), err[0]
    assert sorted(p.name for p in run_dir.rglob("*")) == ["keep.parquet", "results"]
    assert not cache.exists()


def test_plan_says_which_gpu_the_precision_assumes(tmp_path, capsys, monkeypatch) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        textwrap.dedent(SWEEP.format(precision="auto", capability="auto", gpu=1, device=""))
    )
    args = ["plan", str(sweep), "--run-dir", str(tmp_path / "run")]
    host_gpus(monkeypatch)
    assert main(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "precision:" in x)
    assert "bf16 on CUDA" in line and "none on the planning host" in line
    assert "execution.gpu_capability" in line
    host_gpus(monkeypatch, V100)
    assert main(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "precision:" in x)
    assert "fp16 on CUDA" in line and "Tesla V100-SXM2-16GB" in line


# -- keys ------------------------------------------------------------------------------------


def keys(plan) -> dict[str, list[str]]:
    return {
        "pretrain": [u.key for u in plan.pretrains],
        "finetune": [u.key for u in plan.finetunes],
        "baseline": [u.key for u in plan.baselines],
    }


def test_fp16_enters_the_keys_bf16_keeps_them(monkeypatch) -> None:
    gpu_sweep = load_sweep(REPO / "sweeps/cifar10.yaml")  # CUDA, with baselines
    host_gpus(monkeypatch)
    assumed = make_plan(gpu_sweep)
    host_gpus(monkeypatch, A100)
    a100 = make_plan(gpu_sweep)
    host_gpus(monkeypatch, V100)
    v100 = make_plan(gpu_sweep)
    assert keys(a100) == keys(assumed)  # bf16 on CUDA: the keys every cache already has
    assert a100.pretrains[0].settings["execution"]["precision"] == "bf16"
    assert v100.pretrains[0].settings["execution"]["precision"] == "fp16"
    assert v100.baselines[0].settings["execution"]["precision"] == "fp16"
    for kind, old in keys(a100).items():
        assert old and not set(old) & set(keys(v100)[kind]), kind
    explicit = gpu_sweep.model_copy(
        update={"execution": gpu_sweep.execution.model_copy(update={"gpu_capability": "7.0"})}
    )
    host_gpus(monkeypatch, H100)
    assert keys(make_plan(explicit)) == keys(v100)  # the setting, not the host, when given
    assert precision.key_fields(ExecutionSettings(gpu_capability="7.0"), 1) == {
        "device": "cuda",
        "precision": "fp16",
    }
    assert precision.key_fields(ExecutionSettings(gpu_capability="8.0"), 1) == {"device": "cuda"}


# -- the worker --------------------------------------------------------------------------------


def test_autocast_fp16_computes_in_float16() -> None:
    a = torch.randn(4, 4)
    with autocast(CPU, Speed("fp16")):
        assert torch.mm(a, a).dtype == torch.float16
    with autocast(CPU, Speed("bf16")):
        assert torch.mm(a, a).dtype == torch.bfloat16
    with autocast(CPU, Speed()):
        assert torch.mm(a, a).dtype == torch.float32


def test_worker_refuses_bf16_on_a_gpu_below_8(monkeypatch, digits, tmp_path) -> None:
    fake_cuda(monkeypatch, V100)
    cuda = torch.device("cuda")
    with pytest.raises(RuntimeError) as err:
        Speed("bf16", "channels_last").check_device(cuda)
    line = str(err.value)
    assert "\n" not in line and line.startswith("execution.precision: ")
    assert "Tesla V100-SXM2-16GB" in line and "7.0" in line
    Speed("fp16").check_device(cuda)  # what auto plans there
    fake_cuda(monkeypatch, A100)
    Speed("bf16").check_device(cuda)
    with pytest.raises(RuntimeError, match=r"^execution\.precision: .*fp16.*CPU"):
        Speed("fp16").check_device(CPU)
    # the pre-train and baseline loops check before they touch the device or write
    fake_cuda(monkeypatch, T4)
    settings = SSL_SETTINGS["simclr"](proj_hidden=16, proj_dim=8, batch_size=32, epochs=1)
    method = build_method("simclr", build_encoder(width=8), settings)
    with pytest.raises(RuntimeError, match=r"Tesla T4 \(compute capability 7\.5\)"):
        pretrain(
            method, ssl_batches(digits), settings, cuda, tmp_path / "p", 0, speed=Speed("bf16")
        )
    with pytest.raises(RuntimeError, match=r"Tesla T4 \(compute capability 7\.5\)"):
        train_supervised(
            train_set(digits), digits.test, BACKBONE, budget(1), LossParams("ce"), cuda,
            tmp_path / "b", 0, amp=Speed("bf16"),
        )  # fmt: skip
    assert not (tmp_path / "p").exists() and not (tmp_path / "b").exists()


# -- the fp16 step: a real scaler (on the CPU) --------------------------------------------------


class RecordingScaler(torch.amp.GradScaler):
    """A real GradScaler that keeps (loss, scaled loss) of every `scale` and counts steps."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[float, float, float]] = []  # (loss, scaled, scale)
        self.steps = 0

    def scale(self, outputs):  # type: ignore[override]
        scale = self.get_scale()
        out = super().scale(outputs)
        self.seen.append((outputs.item(), out.item(), scale))
        return out

    def step(self, optimizer, *args, **kwargs):  # type: ignore[override]
        self.steps += 1
        return super().step(optimizer, *args, **kwargs)


def real_scalers(monkeypatch, **kwargs) -> list[RecordingScaler]:
    """Every step's scaler becomes an enabled CPU GradScaler; returns those made, in order."""
    made: list[RecordingScaler] = []

    def grad_scaler(self: Speed, device: torch.device) -> RecordingScaler:
        made.append(RecordingScaler("cpu", enabled=True, **kwargs))
        return made[-1]

    monkeypatch.setattr(Speed, "grad_scaler", grad_scaler)
    return made


def ssl_batches(digits) -> Batches:
    index = long_tail_indices(digits.train.labels, digits.num_classes, gamma=1.0, seed=0)[:128]
    return Batches(digits.train, index, digits.test, digits.num_classes, digits.mean, digits.std)


class Killed(Exception):
    pass


def kill_at(epoch: int):
    def hook(state) -> None:
        if (state if isinstance(state, int) else state.epoch) == epoch:
            raise Killed

    return hook


#: a power-of-two scale that grows every 3 clean steps: scaling is exact, the state moves
SCALER = dict(init_scale=2.0**8, growth_interval=3)


def test_pretrain_step_scales_the_loss_and_resumes_the_scaler(monkeypatch, digits, tmp_path):
    data = ssl_batches(digits)
    settings = SSL_SETTINGS["simsiam"](
        proj_hidden=32, proj_dim=16, pred_hidden=16, batch_size=32, warmup_epochs=1,
        epochs=2, checkpoint_every=1, knn_every=100,
    )  # fmt: skip

    def run(folder: str, **kw):
        torch.manual_seed(0)
        method = build_method("simsiam", build_encoder(width=8), settings)
        start = {k: v.clone() for k, v in method.state_dict().items()}
        state = pretrain(method, data, settings, CPU, tmp_path / folder, seed=1, **kw)
        return method, start, state

    plain, _, plain_state = run("fp32")  # no scaler: the reference
    made = real_scalers(monkeypatch, **SCALER)
    scaled, start, state = run("a")
    scaler = made[-1]
    assert scaler.steps == len(scaler.seen) == 8  # 128 / 32 samples, 2 epochs
    for loss, out, scale in scaler.seen:
        assert out == loss * scale and scale >= 2.0**8
    assert scaler.get_scale() == 2.0**10  # grown at steps 3 and 6, no inf skipped
    assert any(not torch.equal(start[k], v) for k, v in scaled.state_dict().items())
    # a power-of-two scale, unscaled before the step: the same weights as unscaled fp32
    for k, v in plain.state_dict().items():
        assert torch.equal(v, scaled.state_dict()[k]), k
    assert state.loss_history == plain_state.loss_history
    saved = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["scaler"]
    assert saved == scaler.state_dict()

    with pytest.raises(Killed):
        run("b", on_epoch=kill_at(1))
    at_kill = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["scaler"]
    assert (at_kill["scale"], at_kill["_growth_tracker"]) == (2.0**9, 1)
    resumed, _, resumed_state = run("b")
    assert made[-1].state_dict() == scaler.state_dict()  # not a fresh scale of 2**8
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["scaler"] == saved
    assert resumed_state.loss_history == state.loss_history
    for k, v in scaled.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def train_set(digits, n: int = 128) -> TrainSet:
    index = np.sort(np.random.default_rng(0).choice(len(digits.train.labels), n, replace=False))
    labels = digits.train.labels[index]
    return TrainSet(digits.train, index, labels, labels, 10, digits.mean, digits.std)


def budget(epochs: int) -> Budget:
    return Budget(epochs, 32, "sgd", 0.9, 0.05, 5e-4, "cosine", 2, 0.5)


def test_baseline_step_scales_the_loss_and_resumes_the_scaler(monkeypatch, digits, tmp_path):
    train = train_set(digits)

    def run(folder: str, **kw):
        return train_supervised(
            train, digits.test, BACKBONE, budget(2), LossParams("ce"), CPU, tmp_path / folder,
            0, 1, **kw,
        )  # fmt: skip

    plain = run("fp32")
    made = real_scalers(monkeypatch, **SCALER)
    scaled = run("a")
    scaler = made[-1]
    assert scaler.steps == len(scaler.seen) == 8
    for loss, out, scale in scaler.seen:
        assert out == loss * scale
    assert scaler.get_scale() == 2.0**10
    assert torch.equal(plain.test_logits, scaled.test_logits)  # exact power-of-two scaling
    assert plain.loss_history == scaled.loss_history
    saved = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["scaler"]
    assert saved == scaler.state_dict()
    with pytest.raises(Killed):
        run("b", on_epoch=kill_at(1))
    at_kill = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["scaler"]
    assert (at_kill["scale"], at_kill["_growth_tracker"]) == (2.0**9, 1)
    resumed = run("b")
    assert made[-1].state_dict() == scaler.state_dict()
    assert torch.equal(resumed.test_logits, scaled.test_logits)


@pytest.mark.parametrize("method", ["elr", "elr_plus", "dividemix"])
def test_every_baseline_steps_through_the_scaler(method, monkeypatch, digits, tmp_path):
    """Each method's own step (ELR's, ELR+'s two networks, DivideMix's warm-up and MixMatch)
    goes through the scaler: as many scaled losses as optimiser steps, every epoch."""
    made = real_scalers(monkeypatch, **SCALER)
    per_epoch: list[int] = []
    train = train_set(digits, 96)
    rest = (CPU, tmp_path, 0, 1)
    on_epoch = lambda e: per_epoch.append(made[-1].steps)  # noqa: E731
    if method == "elr":
        out = train_elr(
            train, digits.test, BACKBONE, budget(2), ELRParams(0.7, 3.0), *rest, on_epoch=on_epoch
        )
    elif method == "elr_plus":
        out = train_elr_plus(
            train, digits.test, BACKBONE, budget(2), ELRPlusParams(), *rest, on_epoch=on_epoch
        )
    else:
        params = DivideMixParams(warmup_epochs=1, lambda_u=25, mix_batch_size=16)
        out = train_dividemix(
            train, digits.test, BACKBONE, budget(2), params, *rest, on_epoch=on_epoch
        )
    scaler = made[-1]
    assert scaler.steps == len(scaler.seen) and all(o == x * s for x, o, s in scaler.seen)
    assert per_epoch[0] > 0 and per_epoch[1] > per_epoch[0]  # the second epoch's steps too
    assert all(math.isfinite(v) for v in out.loss_history)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["scaler"]
    assert saved == scaler.state_dict()
