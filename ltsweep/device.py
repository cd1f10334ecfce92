"""Device choice and the speed settings: precision (bf16 autocast), memory format, compile;
pinned memory and TF32 on CUDA.

What a unit runs with is resolved when it is planned (`ltsweep.sweep.precision`, no torch)
and reaches the worker in the unit's settings as `Speed`; the worker does not re-resolve.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class Speed:
    """How a worker runs its training step: what `execution` resolved to when planned."""

    precision: str = "fp32"  # fp32 | bf16 (autocast)
    memory_format: str = "contiguous"  # contiguous | channels_last
    compile: bool = False

    @classmethod
    def of(cls, resolved: dict[str, Any] | None) -> Speed:
        """From `ltsweep.sweep.precision.resolve`'s dict; None (an older unit): fp32 NCHW."""
        if not resolved:
            return cls()
        return cls(resolved["precision"], resolved["memory_format"], bool(resolved["compile"]))

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    @property
    def channels_last(self) -> bool:
        return self.memory_format == "channels_last"

    def model(self, net: torch.nn.Module) -> torch.nn.Module:
        """`net` in this memory format (in place; returned for chaining)."""
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        return net

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch in this memory format."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def compiled(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` through torch.compile when asked, else itself."""
        return torch.compile(fn) if self.compile else fn

    def compile_module(self, net: torch.nn.Module) -> torch.nn.Module:
        """`net` compiled in place when asked (`nn.Module.compile`: its state_dict keys stay)."""
        if self.compile:
            net.compile()
        return net


def legacy_speed(device: torch.device, amp: bool) -> Speed:
    """What the `amp` flag alone did: bf16 and channels-last on CUDA, fp32 NCHW on the CPU."""
    if device.type == "cuda" and amp:
        return Speed("bf16", "channels_last")
    return Speed()


@contextlib.contextmanager
def autocast(device: torch.device, speed: Speed | bool) -> Iterator[None]:
    """bfloat16 autocast on `device` (CUDA or CPU) when `speed` says bf16; else a no-op.

    A bool is the older `amp` flag: bf16 on CUDA only.
    """
    if isinstance(speed, bool):
        speed = legacy_speed(device, speed)
    if speed.bf16:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device through pinned memory, asynchronously, when the device is a GPU."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x
