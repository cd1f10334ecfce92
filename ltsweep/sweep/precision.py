"""What `execution.precision`, `memory_format` and `compile` resolve to, without torch.

Resolved where keys are computed (planning: no torch), and handed to the worker in the
unit's settings; the worker runs what the plan resolved and never re-resolves, so a key
always names the precision that actually produced the cached output.

Rules (measured in benchmarks/RESULTS.md, "Pre-train at the hardware's limit"):

- precision `auto` is bf16 autocast where the unit runs on CUDA (as `amp: true` always was),
  and on the CPU when the planning host's CPU has native bf16 (`avx512_bf16` or `amx_bf16`
  in /proc/cpuinfo); else fp32. `amp: false` makes `auto` fp32 (the old switch still forces
  full precision); `amp: false` with `precision: bf16` is an error.
- memory_format `auto` is channels_last on CUDA and on the CPU with bf16, else contiguous.
- compile `auto` is off (on 2 shared CPU cores, compiling a ResNet18 step took minutes).

Where a unit runs is read from the settings alone: `device: cuda`, or `device: auto` with
GPUs in the unit kind's resources, is CUDA; anything else is the CPU.

Keys: fp32 and bf16 give different results, so the resolved precision enters the pre-train
and baseline keys, but only when it differs from what the same settings did before
precision existed (bf16 on CUDA with `amp: true`, fp32 on the CPU); the keys of every
existing cache stay as they were. Memory format and compile change rounding only (as
thread counts and library versions do) and are not in keys.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

Precision = Literal["fp32", "bf16"]

#: read for the CPU's flags; tests point it elsewhere
CPUINFO = Path("/proc/cpuinfo")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def _cpu_flags(path: str) -> frozenset[str]:
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):  # x86, arm64
            return frozenset(value.split())
    return frozenset()


def cpu_has_bf16(cpuinfo: Path | None = None) -> bool:
    """Whether this host's CPU does bf16 arithmetic natively (AVX512-BF16 or AMX)."""
    flags = _cpu_flags(str(cpuinfo or CPUINFO))
    return any(f in flags for f in BF16_FLAGS)


def runs_on_cuda(execution: Any, gpus: float) -> bool:
    """Whether a unit with `gpus` GPUs in its resources runs on CUDA (from settings only)."""
    return execution.device == "cuda" or (execution.device == "auto" and gpus > 0)


def legacy_precision(execution: Any, cuda: bool) -> Precision:
    """What these settings ran before `execution.precision` existed (keys keep it implicit)."""
    return "bf16" if cuda and execution.amp else "fp32"


def resolve(execution: Any, gpus: float, cpuinfo: Path | None = None) -> dict[str, Any]:
    """{precision, memory_format, compile, device_type} that a unit's worker runs with."""
    cuda = runs_on_cuda(execution, gpus)
    precision: Precision
    if execution.precision == "auto":
        if not execution.amp:
            precision = "fp32"
        else:
            precision = "bf16" if cuda or cpu_has_bf16(cpuinfo) else "fp32"
    else:
        precision = execution.precision
    memory_format = execution.memory_format
    if memory_format == "auto":
        memory_format = "channels_last" if cuda or precision == "bf16" else "contiguous"
    compile_ = execution.compile == "on"
    return {
        "precision": precision,
        "memory_format": memory_format,
        "compile": compile_,
        "device_type": "cuda" if cuda else "cpu",
    }


def key_fields(execution: Any, gpus: float, cpuinfo: Path | None = None) -> dict[str, Any]:
    """What a unit's key adds: {"precision": p} only when p is not the legacy precision."""
    resolved = resolve(execution, gpus, cpuinfo)
    cuda = resolved["device_type"] == "cuda"
    if resolved["precision"] == legacy_precision(execution, cuda):
        return {}
    return {"precision": resolved["precision"]}
