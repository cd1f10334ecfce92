"""The progress view of one sweep's run: its Tune configs with their prices in FLOPs,
trials at once per stage from the cluster's resources and what the configs' units ask for,
an assumed speed per trial until one is measured, and where running pre-trains and
baselines say how far they are.

The view itself (`Progress`) knows nothing of sweeps; this is what ties it to one run's
work. It reads the Tune configs (their price, their units' resources), never the sweep.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

from ltsweep.engine.progress import CPU_FLOPS_PER_CORE, FLOPS, Progress, resources_by_kind
from ltsweep.store.curves import read_curve
from ltsweep.store.unit_progress import read_progress, share
from ltsweep.units.baseline import checkpoint_dir


def config_flops(config: dict) -> float:
    """FLOPs of one Tune config (a pre-train, a baseline run or a fine-tune group): the price
    it was given when made (`work_queue.priced`, from `ltsweep.sweep.estimate`)."""
    return float(config[FLOPS])


def for_run(
    todo: dict[str, int],
    configs: Iterable[dict],
    cluster: Mapping[str, float] | None = None,
    stream: TextIO | None = None,
    cache_dir: Path | None = None,
    gpu_tflops: float | None = None,
) -> Progress:
    """The progress view of a sweep's run: the Tune configs to hand out (`configs`) priced
    by the cost model, the trials at once per stage from the `cluster`'s resources (Ray's
    `cluster_resources()`) and what a trial of the stage asks for (its units' `cpu` and
    `gpu`), and an assumed speed per trial until one is measured (`gpu_tflops` per GPU, the
    sweep's `execution.gpu_tflops`, None when it runs on the CPU; `CPU_FLOPS_PER_CORE` per
    CPU). With `cache_dir`, running pre-trains and baselines are measured as they go
    (`fraction_done`)."""
    configs = list(configs)
    cluster = dict(cluster or {})
    slots, prior = {}, {}
    for stage, (cpu, gpu) in resources_by_kind(configs).items():
        fits = []
        if cpu and cluster.get("CPU"):
            fits.append(int(cluster["CPU"] // cpu))
        if gpu and cluster.get("GPU"):
            fits.append(int(cluster["GPU"] // gpu))
        slots[stage] = max(1, min(fits)) if fits else 1
        if gpu and gpu_tflops is not None:
            prior[stage] = gpu_tflops * 1e12 * gpu
        else:
            prior[stage] = CPU_FLOPS_PER_CORE[stage] * max(1.0, cpu)
    return Progress(
        todo,
        stream=stream,
        cost_of=config_flops,
        pending=configs,
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
