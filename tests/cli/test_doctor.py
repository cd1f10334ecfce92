"""`ltsweep doctor`: one aligned line per check, exit 1 only on a failing check; GPUs faked."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from ltsweep import gpu_probe
from ltsweep.engine import node_check
from ltsweep.engine.node_check import WIDTH, doctor
from tests.helpers import ltsweep_cmd

GIB = 1 << 30
ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # the cu130 wheel
ARCHS_CU126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


def _run(**kw) -> tuple[int, list[str]]:
    lines: list[str] = []
    status = doctor(out=lines.append, **kw)
    assert all(len(line) <= WIDTH for line in lines), lines
    return status, lines


def _failing(lines: list[str]) -> list[str]:
    return [line for line in lines if line[node_check._NAME_W :].split()[:1] == ["FAIL"]]


@pytest.fixture
def quick_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The training step's rate without training (its own test is the CLI's)."""
    monkeypatch.setattr(node_check, "train_step_rate", lambda d, p: 1000.0)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch):
    """One faked GPU; returns a setter of its capability and driver. The training step is
    replaced by one that records the precision it was asked for."""
    asked: list[tuple[str, str]] = []

    def setup(
        capability: tuple[int, int] = (9, 0),
        driver: str = "580.65.06",
        cuda: str = "13.0",
        archs: list[str] = ARCHS,
    ) -> list:
        name = "NVIDIA H200" if capability >= (9, 0) else "Tesla V100-SXM2-32GB"
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: name)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (130 * GIB, 140 * GIB))
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: archs)
        monkeypatch.setattr(torch.version, "cuda", cuda)
        info = gpu_probe.GpuInfo(name, capability, 143771, driver)
        monkeypatch.setattr(gpu_probe, "visible_gpus", lambda: (info,))
        monkeypatch.setattr(
            node_check, "train_step_rate", lambda d, p: asked.append((d, p)) or 1234.0
        )
        return asked

    return setup


def test_doctor_here_says_cpu_only_and_exits_0(tmp_path: Path) -> None:
    out = ltsweep_cmd("doctor", "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "CPU only" in out.stdout and "Traceback" not in out.stdout + out.stderr
    names = [line[: node_check._NAME_W].strip() for line in out.stdout.splitlines()]
    for want in ("torch", "driver", "gpus", "precision", "step cpu", "cpus", "memory"):
        assert want in names, out.stdout
    assert "run folder" in names
    assert all(len(line) <= WIDTH for line in out.stdout.splitlines())
    assert "img/s" in out.stdout


def test_an_old_driver_is_one_line_naming_the_build(fake_gpu) -> None:
    asked = fake_gpu(driver="550.54.15")
    status, lines = _run()
    assert status == 1
    failing = _failing(lines)
    assert len(failing) == 1, lines
    assert failing[0].startswith("driver") and "550.54.15" in failing[0]
    assert "cu126" in failing[0] and "580" in failing[0]
    assert not asked, "a GPU step ran though the driver cannot serve the wheel"


def test_a_driver_older_than_any_build_says_update_it(fake_gpu) -> None:
    fake_gpu(driver="470.82.01")
    status, lines = _run()
    assert status == 1 and "update the driver" in _failing(lines)[0]


@pytest.mark.parametrize(("capability", "precision"), [((7, 0), "fp16"), ((9, 0), "bf16")])
def test_auto_precision_follows_the_capability(fake_gpu, capability, precision) -> None:
    if capability < (7, 5):  # a V100 needs the cu126 wheel (the cu130 one has no sm_70)
        asked = fake_gpu(capability, driver="550.54.15", cuda="12.6", archs=ARCHS_CU126)
    else:
        asked = fake_gpu(capability)
    status, lines = _run()
    assert status == 0, lines
    line = next(line for line in lines if line.startswith("precision"))
    assert f"auto -> {precision}" in line, lines
    assert asked == [("cuda:0", precision)]
    assert any(line.startswith("mem cuda:0") and "130.0 of 140.0 GiB" in line for line in lines)


def test_a_gpu_the_wheel_has_no_kernels_for_fails(fake_gpu) -> None:
    asked = fake_gpu((7, 0))
    status, lines = _run()
    failing = _failing(lines)
    assert status == 1 and len(failing) == 1, lines
    assert failing[0].startswith("gpu 0") and "sm_70" in failing[0] and "cu126" in failing[0]
    assert not asked


def test_arch_support_knows_binary_and_ptx_compatibility() -> None:
    assert node_check.arch_support((9, 0), ARCHS) == "sm_90"
    assert node_check.arch_support((8, 9), ARCHS) == "sm_86 kernels"
    assert node_check.arch_support((7, 0), ARCHS) is None
    assert node_check.arch_support((7, 0), ["sm_75", "compute_60"]) == "PTX compute_60, JIT"


def test_an_unwritable_run_folder_fails_in_one_line(tmp_path: Path, quick_step) -> None:
    if os.geteuid() == 0:  # root writes through permissions; sysfs takes no new file
        folder = Path("/sys")
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
    status, lines = _run(run_dir=folder)
    failing = _failing(lines)
    assert status == 1 and len(failing) == 1, lines
    assert failing[0].startswith("run folder") and "not writable" in failing[0]


def test_a_run_folder_the_node_does_not_share_fails(tmp_path: Path, quick_step) -> None:
    status, lines = _run(run_dir=tmp_path, marker=".ray-auth-token")
    assert status == 1 and "not the shared folder" in _failing(lines)[0]
    status, lines = _run(run_dir=tmp_path / "absent", marker=".ray-auth-token")
    assert status == 1 and "not seen here" in _failing(lines)[0]
    (tmp_path / ".ray-auth-token").write_text("x")
    status, lines = _run(run_dir=tmp_path, marker=".ray-auth-token")
    assert status == 0 and not list(tmp_path.glob(".ltsweep-probe-*"))


def test_torch_blind_to_the_drivers_gpus_fails_in_one_line(monkeypatch, quick_step) -> None:
    """As a cu130 wheel on an old driver really behaves: no CUDA device for torch at all."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    info = gpu_probe.GpuInfo("NVIDIA A100-SXM4-80GB", (8, 0), 81920, "550.54.15")
    monkeypatch.setattr(gpu_probe, "visible_gpus", lambda: (info,))
    status, lines = _run()
    failing = _failing(lines)
    assert status == 1 and len(failing) == 1 and failing[0].startswith("driver"), lines
    monkeypatch.setattr(
        gpu_probe, "visible_gpus", lambda: (dataclasses.replace(info, driver="580.65.06"),)
    )
    status, lines = _run()
    failing = _failing(lines)
    assert status == 1 and len(failing) == 1 and failing[0].startswith("gpus"), lines
