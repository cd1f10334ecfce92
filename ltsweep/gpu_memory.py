"""A unit process's share of its GPU's memory: capped when it starts, handed back when it ends.

Ray hands out fractions of a GPU (`resources.finetune.gpu: 0.25` puts four fine-tune groups on
one card) but does not enforce them: a process that grows past its share takes the memory of
the units beside it, and the one that allocates last fails with an out-of-memory error that
names the wrong culprit. So each unit process caps torch's caching allocator at its share
(`torch.cuda.set_per_process_memory_fraction`): a unit that outgrows its share fails itself,
with an error saying so. Ray reuses worker processes for the next trial (`reuse_actors`), and
the allocator keeps what it cached; `release` returns it to the driver, so the next unit on
the card (in this process or another) finds it free.
"""

from __future__ import annotations

import gc

import torch


def cap_share(device: torch.device, share: float) -> float | None:
    """Cap this process's CUDA allocator at `share` of `device`'s memory; return the fraction.

    `share` is the unit kind's `resources.<kind>.gpu`. A share of a whole GPU or more is
    capped at 1.0 (a unit uses one device). Nothing is done on the CPU, or with share 0 (a
    unit whose plan is the CPU does not reach a GPU; see `ltsweep.sweep.precision`): None.
    """
    if device.type != "cuda" or share <= 0:
        return None
    fraction = min(1.0, float(share))
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction


def release(device: torch.device | str | None = None) -> None:
    """Hand what the finished unit cached back to the driver (a no-op without CUDA).

    Drops unreachable tensors first (a unit's model and optimiser may sit in reference cycles),
    then empties torch's cache: the memory the next unit on the card needs is really free.
    """
    if not torch.cuda.is_available() or (
        device is not None and torch.device(device).type != "cuda"
    ):
        return
    gc.collect()
    torch.cuda.empty_cache()
