"""A checkpoint's random state, put back on whatever device the run resumes on.

A checkpoint written on one GPU resumes on two, on the CPU, or the other way round (a requeued
job lands on another node). Its weights and optimiser state always fit (they are read to the
CPU and copied onto the model's device), but its random state may not: the CUDA generators'
states are one per GPU, and a generator made on the device (the augmentation's) has a
different state on the CPU (Mersenne Twister) than on CUDA (Philox). Such a checkpoint is
not damaged, and throwing it away would cost every epoch it holds. What can be carried over
is (the CPU generator, always; the CUDA ones when the GPU count matches); what cannot is
re-seeded from the unit's seed and the checkpoint's epoch, so the run stays reproducible on
its new device, and one log line says so (the run is then not bit-identical to one never
interrupted, which it could not be across devices anyway).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

#: the streams re-seeded after a device change; each gets its own seed
_STREAM_CUDA = 0


def rng_state() -> dict[str, Any]:
    """The torch CPU RNG state and the CUDA ones (one per visible GPU; none on the CPU)."""
    return {
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def reseed_value(seed: int, epoch: int, stream: int) -> int:
    """A seed for `stream` after a device change: a pure function of the unit's seed and the
    epoch resumed from, so two resumes at the same epoch on the same device draw the same."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 101 * (stream + 1)) % (2**63 - 1)


class Restorer:
    """Puts a checkpoint's random state back, re-seeding what does not fit this device, and
    remembers what it could not carry over so that `report` can say it in one line."""

    def __init__(self, seed: int, epoch: int) -> None:
        self.seed, self.epoch = int(seed), int(epoch)
        self.notes: list[str] = []  # what could not be carried over

    def global_rng(self, blob: dict[str, Any]) -> None:
        """CPU state always; CUDA states when this process sees as many GPUs as were saved."""
        torch.set_rng_state(blob["rng_cpu"])
        saved = list(blob.get("rng_cuda") or [])
        if not torch.cuda.is_available():
            if saved:
                self.notes.append(
                    f"the CUDA RNG states of {len(saved)} GPU(s) unused (no GPU here)"
                )
            return
        count = torch.cuda.device_count()
        if len(saved) == count:
            torch.cuda.set_rng_state_all(saved)
            return
        torch.cuda.manual_seed_all(reseed_value(self.seed, self.epoch, _STREAM_CUDA))
        self.notes.append(
            f"the CUDA generators re-seeded (states saved for {len(saved)} GPU(s), {count} here)"
        )

    def generator(self, name: str, gen: torch.Generator, state: torch.Tensor, stream: int) -> None:
        """`gen`'s saved state, or, if it was saved by a generator of another device type (its
        state has another size), a seed from the unit's seed, the epoch and `stream`."""
        if state.numel() == gen.get_state().numel():
            gen.set_state(state)  # a damaged state of the right size still raises here
            return
        gen.manual_seed(reseed_value(self.seed, self.epoch, stream))
        self.notes.append(f"{name} re-seeded (saved on another device type, now {gen.device.type})")

    def report(self, log: logging.Logger, where: object) -> None:
        """One line, only when something could not be carried over."""
        if self.notes:
            log.warning(
                "%s: resumed from epoch %d, a checkpoint written on another device or GPU "
                "count: %s; seeds come from seed %d and epoch %d (the run goes on, reproducibly "
                "on this device, not bit-identical to an uninterrupted one)",
                where,
                self.epoch,
                "; ".join(self.notes),
                self.seed,
                self.epoch,
            )
