"""execution.precision / memory_format / compile: validated, resolved without torch from
the settings and the planning host's CPU flags, in the keys only when not the legacy precision,
and actually applied in the pre-train step (bf16 autocast, channels-last), resuming exactly.

Real data (digits 16x16), the width-8 ResNet18, one CPU thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ltsweep import gpu_probe
from ltsweep.augment import Normalize
from ltsweep.data.digits import load_digits_dataset
from ltsweep.data.imbalance import long_tail_indices
from ltsweep.device import Speed
from ltsweep.models.resnet import build_encoder
from ltsweep.planning.plan import make_plan
from ltsweep.sweep import precision
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.schema import ExecutionSettings, load_sweep, parse_sweep
from ltsweep.sweep.ssl_settings import SSL_SETTINGS, SSLSettings
from ltsweep.train.inference import forward_eval
from ltsweep.train.selfsup.base import SSLMethod, build_method
from ltsweep.train.selfsup.loop import Batches, PretrainState, pretrain
from tests.helpers import REPO

ROOT = REPO
CPU = torch.device("cpu")
BF16_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
AMX_CPU = "processor\t: 0\nflags\t\t: fpu avx512f amx_tile amx_bf16\n"
FP32_CPU = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n"


pytestmark = pytest.mark.usefixtures("one_thread")  # one thread, as in a worker


@pytest.fixture(autouse=True)
def no_host_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA units resolve as on a planning host without GPUs (8.0+ assumed: bf16), whatever
    GPUs the machine running the tests has (tests/sweep/test_precision_by_gpu.py: with them)."""
    monkeypatch.setattr(gpu_probe, "visible_gpus", lambda: ())


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"cpuinfo-{abs(hash(text))}"
    path.write_text(text)
    return path


# -- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("precision", "fp8"), ("memory_format", "nhwc"), ("compile", "yes")],
)
def test_bad_values_name_the_field(field: str, value: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_sweep({"name": "x", "execution": {field: value}})
    message = str(err.value)
    assert "\n" not in message
    assert f"execution.{field}" in message and value in message


def test_bf16_with_amp_false_is_refused() -> None:
    with pytest.raises(SpecError, match=r"execution.*precision: bf16 contradicts amp: false"):
        parse_sweep({"name": "x", "execution": {"precision": "bf16", "amp": False}})


def test_existing_sweep_files_validate() -> None:
    for path in [*sorted((ROOT / "sweeps").glob("*.yaml")), ROOT / "tests/data/tiny.yaml"]:
        ex = load_sweep(path).execution
        assert (ex.precision, ex.memory_format, ex.compile) == ("auto", "auto", "auto")


# -- resolution (no torch: /proc/cpuinfo, mocked) ------------------------------------------


def test_cpu_flags(tmp_path: Path) -> None:
    assert precision.cpu_has_bf16(cpuinfo(tmp_path, BF16_CPU))
    assert precision.cpu_has_bf16(cpuinfo(tmp_path, AMX_CPU))
    assert not precision.cpu_has_bf16(cpuinfo(tmp_path, FP32_CPU))
    assert not precision.cpu_has_bf16(tmp_path / "missing")


@pytest.mark.parametrize(
    ("execution", "gpus", "host", "want"),
    [
        ({"device": "cpu"}, 0, BF16_CPU, ("bf16", "channels_last", False, "cpu")),
        ({"device": "cpu"}, 0, AMX_CPU, ("bf16", "channels_last", False, "cpu")),
        ({"device": "cpu"}, 0, FP32_CPU, ("fp32", "contiguous", False, "cpu")),
        ({"device": "cpu", "amp": False}, 0, BF16_CPU, ("fp32", "contiguous", False, "cpu")),
        ({"device": "cpu", "precision": "fp32"}, 0, BF16_CPU, ("fp32", "contiguous", False, "cpu")),
        (
            {"device": "cpu", "precision": "bf16"},
            0,
            FP32_CPU,
            ("bf16", "channels_last", False, "cpu"),
        ),
        ({"device": "auto"}, 0, FP32_CPU, ("fp32", "contiguous", False, "cpu")),
        ({"device": "auto"}, 1, FP32_CPU, ("bf16", "channels_last", False, "cuda")),
        ({"device": "cuda"}, 0, FP32_CPU, ("bf16", "channels_last", False, "cuda")),
        ({"device": "cuda", "amp": False}, 1, FP32_CPU, ("fp32", "channels_last", False, "cuda")),
        (
            {"device": "cpu", "memory_format": "contiguous", "compile": "on"},
            0,
            BF16_CPU,
            ("bf16", "contiguous", True, "cpu"),
        ),
    ],
)
def test_auto_resolution(tmp_path, execution, gpus, host, want) -> None:
    ex = ExecutionSettings(**execution)
    got = precision.resolve(ex, gpus, cpuinfo(tmp_path, host))
    assert (got["precision"], got["memory_format"], got["compile"], got["device_type"]) == want


def test_key_names_precision_only_when_not_the_legacy_one(tmp_path: Path) -> None:
    """CPU keys are as before precision existed; a CUDA unit's key names its device, so a
    GPU's fp32 and a CPU's fp32 (different kernels, different numbers) never share a key."""
    bf16, fp32 = cpuinfo(tmp_path, BF16_CPU), cpuinfo(tmp_path, FP32_CPU)
    cpu = ExecutionSettings(device="cpu")
    assert precision.key_fields(cpu, 0, fp32) == {}  # fp32 on the CPU: as before
    assert precision.key_fields(cpu, 0, bf16) == {"precision": "bf16"}
    gpu = ExecutionSettings(device="auto")
    assert precision.key_fields(gpu, 1, fp32) == {"device": "cuda"}  # bf16 with amp: legacy
    assert precision.key_fields(ExecutionSettings(precision="fp32"), 1, fp32) == {
        "device": "cuda",
        "precision": "fp32",
    }
    # fp32 through the old switch: legacy, yet not the CPU's fp32 key
    assert precision.key_fields(ExecutionSettings(amp=False), 1, fp32) == {"device": "cuda"}
    assert precision.key_fields(ExecutionSettings(amp=False), 0, fp32) == {}


def test_plan_keys_follow_the_resolved_precision(tmp_path, monkeypatch) -> None:
    """A CPU sweep's pre-train and baseline keys (and so its fine-tunes') differ between a bf16
    and an fp32 planning host; a GPU sweep's do not; the unit carries what its worker runs."""

    def plan(path: Path, host: str):
        monkeypatch.setattr(precision, "CPUINFO", cpuinfo(tmp_path, host))
        return make_plan(load_sweep(path))

    tiny = ROOT / "sweeps/smoke.yaml"  # CPU, with baselines
    a, b = plan(tiny, FP32_CPU), plan(tiny, BF16_CPU)
    assert not {u.key for u in a.pretrains} & {u.key for u in b.pretrains}
    assert not {u.key for u in a.finetunes} & {u.key for u in b.finetunes}
    assert not {u.key for u in a.baselines} & {u.key for u in b.baselines}
    assert a.pretrains[0].settings["execution"]["precision"] == "fp32"
    assert b.pretrains[0].settings["execution"]["precision"] == "bf16"
    assert b.baselines[0].settings["execution"]["precision"] == "bf16"
    gpu = ROOT / "sweeps/cifar10.yaml"
    c, d = plan(gpu, FP32_CPU), plan(gpu, BF16_CPU)
    assert [u.key for u in c.pretrains] == [u.key for u in d.pretrains]
    assert [u.key for u in c.baselines] == [u.key for u in d.baselines]


# -- applied in the step ------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Batches:
    ds = load_digits_dataset(image_size=16)
    index = long_tail_indices(ds.train.labels, ds.num_classes, gamma=1.0, seed=0)[:256]
    return Batches(ds.train, index, ds.test, ds.num_classes, ds.mean, ds.std)


def small(name: str = "simclr", **overrides: object) -> SSLSettings:
    fields: dict[str, object] = dict(
        proj_hidden=64, proj_dim=32, batch_size=64, warmup_epochs=1, knn_every=100
    )
    fields.update(overrides)
    return SSL_SETTINGS[name](**fields)


def build(name: str, settings: SSLSettings, seed: int) -> SSLMethod:
    torch.manual_seed(seed)
    return build_method(name, build_encoder(width=8), settings)


def spy_first_conv(method: SSLMethod) -> list[tuple[torch.dtype, bool, bool]]:
    """(output dtype, input channels-last, weight channels-last) of every training forward."""
    seen: list[tuple[torch.dtype, bool, bool]] = []
    conv = next(m for m in method.encoder.modules() if isinstance(m, torch.nn.Conv2d))

    def hook(mod, args, out):
        if mod.training:
            cl = torch.channels_last
            seen.append(
                (
                    out.dtype,
                    args[0].is_contiguous(memory_format=cl),
                    mod.weight.is_contiguous(memory_format=cl),
                )
            )

    conv.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize(
    ("speed", "want"),
    [
        (Speed("bf16", "channels_last"), (torch.bfloat16, True, True)),
        (Speed("bf16", "contiguous"), (torch.bfloat16, False, False)),
        (Speed("fp32", "channels_last"), (torch.float32, True, True)),
        (Speed(), (torch.float32, False, False)),
    ],
)
def test_step_uses_the_resolved_speed(speed, want, digits, tmp_path) -> None:
    settings = small(epochs=1, checkpoint_every=100)
    method = build("simclr", settings, 0)
    seen = spy_first_conv(method)
    state = pretrain(method, digits, settings, CPU, tmp_path, seed=1, speed=speed)
    assert seen and set(seen) == {want}
    assert all(p.dtype == torch.float32 for p in method.parameters())  # fp32 master weights
    assert all(map(lambda x: x == x, state.loss_history))


def test_feature_extraction_uses_bf16(digits) -> None:
    enc = build_encoder(width=8)
    normalize = Normalize(digits.mean, digits.std, CPU)
    fp32 = forward_eval(enc, digits.train, digits.index[:64], normalize, CPU, Speed())
    bf16 = forward_eval(
        enc, digits.train, digits.index[:64], normalize, CPU, Speed("bf16", "channels_last")
    )
    assert fp32.dtype == bf16.dtype == torch.float32  # features are stored as float32
    assert not torch.equal(fp32, bf16)
    assert torch.allclose(fp32, bf16, rtol=0.1, atol=0.05 * fp32.abs().max().item())


class Killed(Exception):
    pass


@pytest.mark.parametrize("name", ["simsiam", "byol"])
def test_bf16_resume_is_bit_identical(name: str, digits: Batches, tmp_path: Path) -> None:
    speed = Speed("bf16", "channels_last")
    settings = small(name, epochs=3, checkpoint_every=1, pred_hidden=32)
    a = build(name, settings, 0)
    state_a = pretrain(a, digits, settings, CPU, tmp_path / "a", seed=7, speed=speed)

    def kill(state: PretrainState) -> None:
        if state.epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        pretrain(
            build(name, settings, 0),
            digits,
            settings,
            CPU,
            tmp_path / "b",
            7,
            on_epoch=kill,
            speed=speed,
        )
    b = build(name, settings, 123)
    state_b = pretrain(b, digits, settings, CPU, tmp_path / "b", seed=7, speed=speed)
    assert state_b.loss_history == state_a.loss_history
    sd_a, sd_b = a.state_dict(), b.state_dict()
    for k in sd_a:
        assert torch.equal(sd_a[k], sd_b[k]), k


@pytest.mark.slow  # torch.compile of a ResNet18 step: minutes on 2 shared cores
def test_compiled_step_runs(digits, tmp_path) -> None:
    settings = small(epochs=1, checkpoint_every=100)
    method = build("simclr", settings, 0)
    state = pretrain(method, digits, settings, CPU, tmp_path, seed=1, speed=Speed(compile=True))
    assert len(state.loss_history) == 1 and state.loss_history[0] == state.loss_history[0]
    # the compiled module keeps its parameter names: checkpoints and snapshots stay loadable
    assert not any("_orig_mod" in k for k in method.state_dict())
