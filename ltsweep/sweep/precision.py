"""What `execution.precision`, `memory_format` and `compile` resolve to, without torch.

Resolved where keys are computed (planning: no torch), and handed to the worker in the
unit's settings; the worker runs what the plan resolved and never re-resolves, so a key
always names the precision that actually produced the cached output.

Rules (measured in benchmarks/RESULTS.md, "Pre-train at the hardware's limit"):

- precision `auto` on CUDA is bf16 autocast where the GPU does bf16 natively (compute
  capability 8.0, Ampere, and newer), else fp16 autocast with a loss scaler: V100 and T4 run
  bf16 only by emulation, far slower than fp16 (`torch.cuda.is_bf16_supported()` says True
  there, so it cannot decide). Which GPU is `execution.gpu_capability`: "auto" reads the
  planning host's GPUs (the lowest capability among them, through `ltsweep.gpu_probe`) and,
  on a host without GPUs (a login node), assumes 8.0 or newer; the worker checks its own
  device again and refuses bf16 below 8.0. On the CPU `auto` is bf16 when the planning
  host's CPU has native bf16 (`avx512_bf16` or `amx_bf16` in /proc/cpuinfo); else fp32.
  `amp: false` makes `auto` fp32 (the old switch still forces full precision); `amp: false`
  with bf16 or fp16 is an error.
- an explicit `precision: bf16` on CUDA below capability 8.0, and `fp16` on the CPU (CPU
  autocast fp16 is not a training mode: no loss scaler, no fast kernels) are refused with
  one line naming `execution.precision`.
- memory_format `auto` is channels_last on CUDA and on the CPU with bf16, else contiguous.
- compile `auto` is off (on 2 shared CPU cores, compiling a ResNet18 step took minutes).

Where a unit runs is read from the settings alone: `device: cuda`, or `device: auto` with
GPUs in the unit kind's resources, is CUDA; anything else is the CPU.

Keys: fp32, bf16 and fp16 give different results, so the resolved precision enters the
pre-train and baseline keys, but only when it differs from what the same settings did before
precision existed (bf16 on CUDA with `amp: true`, fp32 on the CPU); the keys of every
existing cache stay as they were. The device type enters the keys of CUDA units (their
kernels round differently from the CPU's: an fp32 unit on a GPU and the same on a CPU are not
the same result); CPU keys stay as they were. Memory format and compile change rounding only
(as thread counts and library versions do) and are not in keys.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from ltsweep import gpu_probe
from ltsweep.sweep.base import SpecError

Precision = Literal["fp32", "bf16", "fp16"]

#: the first compute capability with bf16 arithmetic in hardware (Ampere)
BF16_CAPABILITY = (8, 0)

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


def planned_gpu(execution: Any) -> tuple[tuple[int, int], str]:
    """(compute capability, what it is) of the GPU the CUDA units are planned for.

    `execution.gpu_capability` "major.minor" as given; "auto": the planning host's GPU of
    the lowest capability, or, with none, an assumed 8.0 (the GPUs a sweep is run on today).
    """
    given = getattr(execution, "gpu_capability", "auto")
    if given != "auto":
        major, minor = (int(p) for p in given.split("."))
        return (major, minor), f"capability {given} (execution.gpu_capability)"
    gpus = gpu_probe.visible_gpus()
    if not gpus:
        return BF16_CAPABILITY, "a GPU of capability 8.0 or newer (none on the planning host)"
    gpu = min(gpus, key=lambda g: g.capability)
    cap = gpu.capability
    return cap, f"{gpu.name} (capability {cap[0]}.{cap[1]}) on the planning host"


def resolve(execution: Any, gpus: float, cpuinfo: Path | None = None) -> dict[str, Any]:
    """{precision, memory_format, compile, device_type} that a unit's worker runs with.

    A precision the device cannot train in (bf16 on a GPU below capability 8.0, fp16 on the
    CPU) is a one-line `SpecError` naming `execution.precision`.
    """
    cuda = runs_on_cuda(execution, gpus)
    precision: Precision
    if execution.precision == "auto":
        if not execution.amp:
            precision = "fp32"
        elif cuda:
            precision = "bf16" if planned_gpu(execution)[0] >= BF16_CAPABILITY else "fp16"
        else:
            precision = "bf16" if cpu_has_bf16(cpuinfo) else "fp32"
    else:
        precision = execution.precision
    if precision == "bf16" and cuda:
        cap, gpu = planned_gpu(execution)
        if cap < BF16_CAPABILITY:
            raise SpecError(
                f"execution.precision: bf16 needs a GPU of compute capability 8.0 or newer, "
                f"and the CUDA units are planned for {gpu}, which only emulates bf16 (slowly); "
                "say precision: fp16 or auto (fp16 with a loss scaler there)"
            )
    if precision == "fp16" and not cuda:
        raise SpecError(
            "execution.precision: fp16 is a CUDA mode (with a loss scaler), and these units run "
            "on the CPU (execution.device, or no GPU in their resources); say auto, bf16 or fp32"
        )
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
    """What a unit's key adds: {"device": "cuda"} for a CUDA unit, and {"precision": p} only
    when p is not the legacy precision."""
    resolved = resolve(execution, gpus, cpuinfo)
    cuda = resolved["device_type"] == "cuda"
    fields: dict[str, Any] = {"device": "cuda"} if cuda else {}
    if resolved["precision"] != legacy_precision(execution, cuda):
        fields["precision"] = resolved["precision"]
    return fields


def describe(execution: Any, gpus: dict[str, float], cpuinfo: Path | None = None) -> str:
    """One line for `ltsweep plan`: the precision each unit kind (name -> its GPUs) resolves
    to and, for CUDA, which GPU that assumed, so a plan made on a login node says so."""
    parts: dict[str, list[str]] = {}
    cuda = False
    for what, n in gpus.items():
        r = resolve(execution, n, cpuinfo)
        cuda |= r["device_type"] == "cuda"
        parts.setdefault(f"{r['precision']} on {r['device_type'].upper()}", []).append(what)
    line = "  precision: " + "; ".join(f"{p} ({', '.join(w)})" for p, w in parts.items())
    if cuda:
        _, gpu = planned_gpu(execution)
        line += f" for {gpu}"
        if getattr(execution, "gpu_capability", "auto") == "auto" and not gpu_probe.visible_gpus():
            line += '; older GPUs: set execution.gpu_capability (e.g. "7.0": fp16)'
    return line
