"""The progress view of one sweep's run: its Tune configs with their prices in FLOPs,
trials at once per stage from the cluster's resources, an assumed speed per trial until one
is measured, and where running pre-trains and baselines say how far they are.

The view itself (`Progress`) knows nothing of sweeps; this is what ties it to one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from ltsweep.engine.progress import CPU_FLOPS_PER_CORE, FLOPS, Progress
from ltsweep.store.curves import read_curve
from ltsweep.store.unit_progress import read_progress, share
from ltsweep.units import baseline, finetune, pretrain
from ltsweep.units.baseline import checkpoint_dir


def config_flops(config: dict) -> float:
    """FLOPs of one Tune config (a pre-train, a baseline run or a fine-tune group): the price
    it was given when made (`work_queue.priced`, from `ltsweep.sweep.estimate`)."""
    return float(config[FLOPS])


def for_sweep(
    sweep: Any,
    todo: dict[str, int],
    configs: Iterable[dict],
    cluster: Mapping[str, float] | None = None,
    stream: TextIO | None = None,
    cache_dir: Path | None = None,
) -> Progress:
    """The progress view of a sweep's run: the Tune configs to hand out (`configs`) priced
    by the cost model, the trials at once per stage from the `cluster`'s resources (Ray's
    `cluster_resources()`) and each stage's resources, and an assumed speed per trial until
    one is measured (`execution.gpu_tflops` per GPU, `CPU_FLOPS_PER_CORE` per CPU). With
    `cache_dir`, running pre-trains and baselines are measured as they go (`fraction_done`)."""
    cluster = dict(cluster or {})
    slots, prior = {}, {}
    for stage, kind in (("pretrain", pretrain), ("finetune", finetune), ("baseline", baseline)):
        r = kind.resources(sweep)
        fits = []
        if r.cpu and cluster.get("CPU"):
            fits.append(int(cluster["CPU"] // r.cpu))
        if r.gpu and cluster.get("GPU"):
            fits.append(int(cluster["GPU"] // r.gpu))
        slots[stage] = max(1, min(fits)) if fits else 1
        if r.gpu and sweep.execution.device != "cpu":
            prior[stage] = sweep.execution.gpu_tflops * 1e12 * r.gpu
        else:
            prior[stage] = CPU_FLOPS_PER_CORE[stage] * max(1.0, r.cpu)
    return Progress(
        todo,
        stream=stream,
        cost_of=config_flops,
        pending=list(configs),
        prior_rate=prior,
        slots=slots,
        fraction_of=(lambda c: fraction_done(Path(cache_dir), c)) if cache_dir else None,
    )


def fraction_done(cache_dir: Path, config: dict) -> tuple[float, float] | None:
    """(share of its epochs done, training seconds they took) of a running pre-train (its
    curve) or baseline (its progress file); None for a fine-tune group or when not known."""
    if config.get("kind") == "pretrain":
        epochs, records = read_curve(cache_dir, config["unit"]["key"])
        if not records:
            return None
        last = max(records, key=lambda r: r["epoch"])
        return share(last["epoch"], epochs, float(last["seconds"] or 0.0))
    if config.get("kind") == "baseline":
        return read_progress(checkpoint_dir(cache_dir, config["unit"]["key"]))
    return None
