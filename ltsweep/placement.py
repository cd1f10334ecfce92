"""Where a unit runs: exactly the device its plan resolved, or one line saying why it cannot.

The plan resolves each unit's device type from the settings alone (`ltsweep.sweep.precision`:
`device: cuda`, or `device: auto` with GPUs in the kind's resources), and its cache key and
precision assume it. The worker must not decide again:

- a unit planned on CUDA whose worker sees no usable GPU raises `DeviceUnavailable`, one line
  naming the node, the torch build, the driver and what torch saw. Falling back to the CPU
  would look healthy while training a hundred times slower, with numbers the key does not
  describe.
- a unit planned on the CPU stays there, even on a GPU node: Ray leaves
  CUDA_VISIBLE_DEVICES alone for tasks that asked for no GPU, so such a unit would
  otherwise see every GPU of the node and land, uncounted, on the GPU another unit holds.
  Hiding the GPUs (before CUDA is initialised) keeps torch and every library off them; the
  unit's TF32 and cuDNN settings are left as they are (fp32 is fp32 on the CPU).

TF32 matmuls and cuDNN autotuning are switched on for CUDA units only.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import Any

import torch

from ltsweep import gpu_probe

#: the oldest Linux driver (major version) that runs a CUDA major version's wheels (NVIDIA's
#: CUDA toolkit release notes, "minimum required driver version")
MIN_DRIVER = {11: 450, 12: 525, 13: 580}


class DeviceUnavailable(RuntimeError):
    """A unit planned on CUDA, on a worker whose torch sees no usable GPU."""


def unit_device(resolved: dict[str, Any] | None, setting: str = "auto") -> torch.device:
    """The device of a unit whose plan resolved `resolved` (`precision.resolve`'s dict).

    device_type cuda: the GPU, or `DeviceUnavailable`. cpu: the CPU, with the node's GPUs
    hidden from this process while CUDA is not initialised yet. `resolved` None (a unit
    planned before the plan said where it runs) reads `setting` (`execution.device`) as
    before: cuda requires a GPU, auto takes one when visible.
    """
    if resolved is None:
        cuda = setting == "cuda" or (setting == "auto" and torch.cuda.is_available())
    else:
        cuda = resolved.get("device_type") == "cuda"
    return _cuda() if cuda else _cpu()


def _cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise DeviceUnavailable(no_gpu_line())
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda")


def _cpu() -> torch.device:
    if not torch.cuda.is_initialized():  # once CUDA is up, it has read the variable already
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return torch.device("cpu")


def driver_hint(driver: str, cuda: str | None) -> str:
    """' (CUDA 13 needs 580+)' when `driver` is too old for the wheel's CUDA `cuda`, else ''."""
    try:
        need = MIN_DRIVER[int(str(cuda).split(".")[0])]
        have = int(driver.split(".")[0])
    except (KeyError, ValueError):
        return ""
    return f" (CUDA {str(cuda).split('.')[0]} needs {need}+)" if have < need else ""


def _driver() -> str:
    gpus = gpu_probe.visible_gpus()
    if gpus:
        return f"driver {gpus[0].driver}"
    return "no nvidia-smi" if shutil.which("nvidia-smi") is None else "nvidia-smi lists no GPU"


def _init_error() -> str:
    """What torch says when it initialises CUDA (its first sentence), or '' when it can."""
    try:
        torch.cuda.init()
    except Exception as err:  # noqa: BLE001 - any failure is what the line reports
        text = " ".join(str(err).split()) or type(err).__name__
        return text.split(". ")[0].rstrip(".")[:200]
    return ""


def no_gpu_line() -> str:
    """The one line of a unit planned on CUDA whose worker sees no GPU: node, torch build,
    driver, CUDA_VISIBLE_DEVICES and what torch saw."""
    cuda = torch.version.cuda
    build = f"torch {torch.__version__}" + ("" if cuda else " (a CPU-only build)")
    driver = _driver()
    gpus = gpu_probe.visible_gpus()
    if gpus:
        driver += driver_hint(gpus[0].driver, cuda)
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    seen = (
        f"torch.cuda.is_available() {torch.cuda.is_available()}, "
        f"device_count {torch.cuda.device_count()}"
    )
    error = _init_error() if not torch.cuda.is_initialized() else ""
    if error:
        seen += f", init: {error}"
    line = (
        f"unit planned on CUDA but {socket.gethostname()} sees no GPU: {build}, {driver}, "
        f"CUDA_VISIBLE_DEVICES={'unset' if cvd is None else repr(cvd)}, {seen}"
    )
    return " ".join(line.split())
