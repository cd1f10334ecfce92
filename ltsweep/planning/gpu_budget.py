"""Whether the fine-tune groups of a plan fit the GPU share each is given, checked before a run.

A fine-tune group is one stacked model of up to `execution.max_group_size` trials, cut to
`execution.finetune_memory_gb` by the estimate of `ltsweep.sweep.estimate.finetune_bytes`.
Ray runs `1 / resources.finetune.gpu` groups on one card at once, and each worker caps its
allocator at that share (`ltsweep.gpu_memory`). A group larger than its share would fail on
the GPU after the pre-trains it waits for have run for hours; here it is one line before
anything is written, naming the two settings that fix it.

The card is the smallest GPU this host's driver reports (`ltsweep.gpu_probe`, no torch): a
local run's, or the one a SLURM job's driver finds on its first node. A host without a GPU
(a login node) cannot say, and the check is skipped with a note. Pre-trains and baselines
are not sized: one batch of a ResNet18 takes a few GB, and their memory is not estimated.
Imports no torch.
"""

from __future__ import annotations

import math

from ltsweep import gpu_probe
from ltsweep.planning.plan import make_plan
from ltsweep.sweep import precision
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.estimate import features_bytes, finetune_group_bytes
from ltsweep.sweep.schema import Sweep
from ltsweep.units.finetune import finetune_groups, resources

#: GPU memory a worker process takes outside torch's caching allocator (the CUDA context with
#: cuBLAS and cuDNN workspaces: ~300-600 MiB on recent drivers), which the cap does not count
CONTEXT_MIB = 512
GIB = 2**30


def check_gpu_memory(sweep: Sweep, source: str = "") -> str | None:
    """Refuse (`SpecError`, one line) a plan whose largest fine-tune group does not fit its
    share of this host's smallest GPU; return a note when there is no GPU to check against,
    None when the groups fit or the fine-tunes do not run on CUDA."""
    share = resources(sweep).gpu
    if not precision.runs_on_cuda(sweep.execution, share) or not sweep.grid.ssl:
        return None
    plan = make_plan(sweep)
    groups = finetune_groups(sweep, plan.finetunes)
    if not groups:
        return None
    largest = max(groups, key=lambda g: finetune_group_bytes(sweep, g))
    need = finetune_group_bytes(sweep, largest) + CONTEXT_MIB * 2**20
    gpus = gpu_probe.visible_gpus()
    if not gpus:
        return (
            f"GPU memory not checked: no GPU on this host (a fine-tune group takes up to "
            f"{need / GIB:.1f} GiB, resources.finetune.gpu {share:g} of a GPU must hold it)"
        )
    card = min(gpus, key=lambda g: g.memory_mib)
    fraction = min(1.0, share) if share > 0 else 1.0
    have = fraction * card.memory_mib * 2**20
    if need <= have:
        return None
    where = f"{source}: " if source else ""
    fixed = features_bytes(sweep, largest[0]) + CONTEXT_MIB * 2**20
    fixes = []
    bigger = _share_that_fits(need, card.memory_mib * 2**20)
    if bigger is not None:
        fixes.append(f"raise resources.finetune.gpu to {bigger:g}")
    if have > fixed:
        fixes.append(
            f"lower execution.finetune_memory_gb to {math.floor((have - fixed) / GIB * 10) / 10:g} "
            "(smaller groups)"
        )
    per_gpu = f"{int(1 / fraction + 1e-9)} groups per GPU, " if fraction < 1 else ""
    raise SpecError(
        f"{where}resources.finetune.gpu: a fine-tune group of {len(largest)} trials needs "
        f"{need / GIB:.1f} GiB (its trials, the features and a CUDA context) but "
        f"{per_gpu}{fraction:g} of a {card.name} ({card.memory_mib / 1024:.0f} GiB) is "
        f"{have / GIB:.1f} GiB; " + (" or ".join(fixes) or "use a GPU with more memory")
    )


def _share_that_fits(need: float, card: float) -> float | None:
    """The largest number of groups per GPU that fits, as Ray's share (1/k), or None."""
    for k in range(16, 0, -1):
        if need <= card / k:
            return round(1 / k, 4)
    return None
