"""What GPUs a host has, read from `nvidia-smi` without importing torch.

Planning (`ltsweep plan`, the driver) imports no torch, yet the precision `auto` resolves to
and the memory a fine-tune group may take depend on the GPU: bf16 is native from compute
capability 8.0 (Ampere) and only emulated below it; a group must fit the card. The node's
driver answers both through `nvidia-smi`. A host without it (a login node, this laptop)
has no GPUs as far as planning knows, and the worker checks its own device again.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass

#: what nvidia-smi is asked for, in this order
QUERY = "name,compute_cap,memory.total,driver_version"


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the driver describes it."""

    name: str
    capability: tuple[int, int]
    memory_mib: int
    driver: str

    @property
    def bf16_native(self) -> bool:
        """bf16 arithmetic in hardware (Ampere, compute capability 8.0, and newer)."""
        return self.capability >= (8, 0)


def parse(text: str) -> list[GpuInfo]:
    """`nvidia-smi --query-gpu=QUERY --format=csv,noheader,nounits` output, a GPU a line."""
    gpus = []
    for line in text.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4:
            continue
        name, cap, memory, driver = fields
        try:
            major, minor = (int(p) for p in cap.split("."))
            gpus.append(GpuInfo(name, (major, minor), int(float(memory)), driver))
        except ValueError:
            continue
    return gpus


@functools.cache
def visible_gpus() -> tuple[GpuInfo, ...]:
    """The GPUs this host's driver reports (all of them: nvidia-smi ignores
    CUDA_VISIBLE_DEVICES); empty without nvidia-smi or when it fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        done = subprocess.run(
            [exe, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(parse(done.stdout)) if done.returncode == 0 else ()
