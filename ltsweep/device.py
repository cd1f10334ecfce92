"""Device choice and the speed settings: precision (bf16 or fp16 autocast, the latter with a
loss scaler), memory format, compile; pinned memory and TF32 on CUDA.

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

#: the first compute capability with bf16 arithmetic in hardware (Ampere)
BF16_CAPABILITY = (8, 0)


def pick_device(setting: str = "auto") -> torch.device:
    """The device `execution.device` names where no plan resolved one (the benchmarks):
    'auto' takes a visible GPU, else the CPU; 'cuda' without one fails. Units use
    `ltsweep.placement.unit_device`, which runs where their plan says."""
    from ltsweep.placement import unit_device  # lazily: placement may import this module

    return unit_device(None, setting)


def use_threads(n: float | int) -> None:
    """Match torch's intra-op threads to the CPUs this process was given (Ray sets OMP_NUM_THREADS)."""
    n = max(1, int(n or os.environ.get("OMP_NUM_THREADS", 1)))
    torch.set_num_threads(n)


@dataclass(frozen=True)
class Speed:
    """How a worker runs its training step: what `execution` resolved to when planned."""

    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast; fp16 with a loss scaler)
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
    def fp16(self) -> bool:
        return self.precision == "fp16"

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """The loss scaler of a training step: real (enabled) for fp16, whose small gradients
        underflow without it; a no-op pass-through for fp32 and bf16 (bf16 has fp32's range).

        A step does `scaler.scale(loss).backward()`, `scaler.unscale_(opt)` before any
        gradient clipping, `scaler.step(opt)`, `scaler.update()`; its `state_dict()` goes
        into the checkpoint so a resumed run continues with the same scale.
        """
        return torch.amp.GradScaler(device.type, enabled=self.fp16)

    def check_device(self, device: torch.device) -> None:
        """Refuse, in one line, a precision this device cannot train in: bf16 on a GPU below
        compute capability 8.0 (emulated: `torch.cuda.is_bf16_supported()` still says True),
        fp16 on the CPU (no loss-scaled training mode there)."""
        if device.type == "cuda" and self.bf16:
            cap = torch.cuda.get_device_capability(device)
            if cap < BF16_CAPABILITY:
                name = torch.cuda.get_device_name(device)
                raise RuntimeError(
                    f"execution.precision: the plan says bf16, but {device} is {name} (compute "
                    f"capability {cap[0]}.{cap[1]}), which only emulates bf16; plan with "
                    f'execution.gpu_capability: "{cap[0]}.{cap[1]}" (auto gives fp16) or '
                    "precision: fp16"
                )
        if device.type == "cpu" and self.fp16:
            raise RuntimeError(
                "execution.precision: the plan says fp16, a CUDA mode, but this unit runs on "
                "the CPU"
            )

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
    """bfloat16 autocast on `device` (CUDA or CPU) when `speed` says bf16, float16 when it
    says fp16 (its step scales the loss: `Speed.grad_scaler`); else a no-op.

    A bool is the older `amp` flag: bf16 on CUDA only.
    """
    if isinstance(speed, bool):
        speed = legacy_speed(device, speed)
    if speed.bf16 or speed.fp16:
        with torch.autocast(device.type, dtype=torch.bfloat16 if speed.bf16 else torch.float16):
            yield
    else:
        yield


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device through pinned memory, asynchronously, when the device is a GPU."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x
