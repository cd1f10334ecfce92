"""Device choice and the CUDA-only speed settings (AMP, channels-last, pinned memory, TF32)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def pick_device(setting: str = "auto") -> torch.device:
    """'auto' takes the GPU Ray (or the user) made visible, else the CPU; 'cuda' without one fails."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("execution.device is 'cuda' but no CUDA device is visible")
    if setting in ("auto", "cuda") and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda")
    return torch.device("cpu")


def use_threads(n: float | int) -> None:
    """Match torch's intra-op threads to the CPUs this process was given (Ray sets OMP_NUM_THREADS)."""
    n = max(1, int(n or os.environ.get("OMP_NUM_THREADS", 1)))
    torch.set_num_threads(n)


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bfloat16 autocast on CUDA when asked; a no-op on the CPU (CPU autocast is slower here)."""
    if enabled and device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device through pinned memory, asynchronously, when the device is a GPU."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x
