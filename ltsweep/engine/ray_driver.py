"""The sweep driver on Ray Tune: pre-trains first, their fine-tunes as soon as features exist.

Tune has no trial dependencies. A custom `Searcher` holds the ready work: at the start, the
pre-trains to run and the fine-tune groups whose features are already stored; when a
pre-train trial completes, `on_trial_complete` releases that pre-train's fine-tune groups,
so they run while other pre-trains are still training. `suggest` answers None while work is
still locked behind a running pre-train, and FINISHED when nothing is left. Each Tune trial
asks for the resources its units carry from the plan, their kind's (`tune.with_resources`
with a function of the config); the sweep itself goes to the workers, which train from it.

Results are written by the workers themselves (atomically, into the run folder); Tune's own
experiment state is kept under `<run>/tune/` for debugging only and never read back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault(
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"
)  # no result.json / progress.csv writers
os.environ.setdefault("TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S", "600")
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # ltsweep handles Ctrl-C itself (ctrl_c)

import ray  # noqa: E402
import yaml  # noqa: E402
from ray import tune  # noqa: E402

from ltsweep.engine import sweep_progress
from ltsweep.engine.driver_process import (
    StopOnEvent,
    ctrl_c,
    heartbeat,
    keep_sigterm,
    log_ray_to_file,
)
from ltsweep.engine.local_ray import RAY_INIT, start_local_ray
from ltsweep.engine.progress import resources_by_kind, resources_of
from ltsweep.engine.tune_callbacks import ProgressCallback, config_name, tensorboard, trial_name
from ltsweep.engine.work_queue import (
    FAILED,
    DependencySearcher,
    failed_result,
    work_items,
)
from ltsweep.planning.gpu_budget import check_gpu_memory
from ltsweep.planning.plan import KINDS, make_plan
from ltsweep.planning.state import assess
from ltsweep.store import shared_rows
from ltsweep.store.atomic import cleanup_temp, write_json, write_text
from ltsweep.store.cache import CacheError
from ltsweep.store.curves import progress_of
from ltsweep.store.lock import LockHeld, RunLock
from ltsweep.store.results import prune_failed, quarantine_results, write_rows
from ltsweep.sweep.schema import SpecError, Sweep, check_data_root
from ltsweep.units import finetune
from ltsweep.units.base import RunContext

log = logging.getLogger("ltsweep.driver")


def _trainable(config: dict, ctx_blob: dict) -> None:
    """One Tune trial: run one unit of work in the worker, report once.

    A unit that raises is recorded here (its failed rows and traceback under logs/, written
    by the unit itself or below) and reported as `failed`: retrying it at once would fail the
    same way, and the next run retries it. Only a trial whose worker was lost (its node or
    process died) reaches Tune as an error, and Tune retries it on the nodes that are left
    (`execution.max_failures`); the unit resumes from its checkpoint in the cache.
    """
    from ltsweep.device import use_threads  # torch: in the worker, never in the driver
    from ltsweep.gpu_memory import release as release_gpu_memory

    sweep = Sweep.model_validate(ctx_blob["sweep"])
    ctx = RunContext(
        sweep, Path(ctx_blob["run_dir"]), Path(ctx_blob["cache_dir"]), report=tune.report
    )
    kind = config["kind"]
    use_threads(resources_of(config)[0])
    t0 = time.perf_counter()
    try:
        KINDS[kind].run_config(ctx, config)
    except Exception as err:  # noqa: BLE001 - recorded, reported, retried by the next run
        logs = ctx.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        write_text(logs / f"{config_name(config)}.error.txt", traceback.format_exc())
        message = f"{type(err).__name__}: {err}"
        tune.report({"seconds": time.perf_counter() - t0, FAILED: message})
        return
    finally:  # Ray reuses this process: the next trial on the card finds the memory free
        release_gpu_memory()
    tune.report({"seconds": time.perf_counter() - t0})


def trial_resources(config: dict) -> tune.PlacementGroupFactory:
    """What the Tune trial of `config` asks Ray for: what its units carry from the plan,
    their kind's `resources` (a fraction of a GPU below 1 lets trials share one: two
    baselines at `resources.baseline.gpu` 0.5)."""
    cpu, gpu = resources_of(config)
    return tune.PlacementGroupFactory([{"CPU": cpu, "GPU": gpu}])


def _check_resources(configs: list[dict], cluster: dict[str, float]) -> None:
    """Every trial to hand out fits the Ray cluster (one that does not would wait forever):
    a kind with nothing left to run asks for nothing."""
    asked = resources_by_kind(configs)
    for kind in KINDS:
        if kind not in asked:
            continue
        cpu, gpu = asked[kind]
        if gpu > 0 and cluster.get("GPU", 0) <= 0:
            raise SpecError(
                f"resources.{kind}.gpu: {gpu:g} GPU asked but the Ray cluster has none "
                f"(set resources.{kind}.gpu: 0 to run on the CPU)"
            )
        if cpu > cluster.get("CPU", 0):
            raise SpecError(
                f"resources.{kind}.cpu: {cpu:g} CPUs asked but the Ray cluster has {cluster.get('CPU', 0):g}"
            )


def prepare_run(sweep: Sweep, run_dir: Path, cache_dir: Path, say=None):
    """Validate, repair what is damaged, write the frozen sweep copy and run.json, and assess
    what is stored. Called holding the run folder's lock: damaged results files and cache
    entries are moved to a `.quarantine/` folder (one line each through `say`) and their units
    run again."""
    check_data_root(sweep)
    check_gpu_memory(sweep)  # in a SLURM job: this node's GPU (the submit host may have none)
    plan = make_plan(sweep)
    for d in (run_dir / "results", run_dir / "logs", cache_dir):
        d.mkdir(parents=True, exist_ok=True)
    cleanup_temp(run_dir)
    cleanup_temp(cache_dir)
    say = say or (lambda line: None)
    for path, moved, why in quarantine_results(run_dir / "results"):
        say(f"{path}: unreadable results file ({why}); moved to {moved}, its units run again")
    prune_failed(run_dir / "results")
    write_text(
        run_dir / "sweep.yaml", yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False)
    )
    write_json(run_dir / "run.json", {"sweep": sweep.name, "cache_dir": str(cache_dir.resolve())})
    assessment = assess(plan, run_dir, cache_dir, repair=True)
    for line in assessment.repaired:
        say(f"{line}; recomputed by this run")
    reused = shared_rows.adopt(cache_dir, run_dir / "results", assessment.from_cache)
    if reused:
        say(
            f"reusing {reused} results that a run sharing the cache computed (their rows keep its sweep name and seconds)"
        )
        assessment.done |= assessment.from_cache
    return assessment


def run_sweep(
    sweep: Sweep,
    run_dir: Path,
    cache_dir: Path,
    *,
    address: str | None = None,
    show_progress: bool = True,
    stop_event: threading.Event | None = None,
    stream=None,
) -> dict[str, Any]:
    """Run what of `sweep` is not stored yet; return a summary of counts.

    Takes the run folder's lock first (`ltsweep.store.lock`: one driver per run folder; a
    live holder is a SpecError naming it) and holds it to the end. Raises SpecError /
    CacheError (one line, naming the field or file) before scheduling anything.
    """
    run_dir, cache_dir = Path(run_dir), Path(cache_dir)
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except LockHeld as err:
        raise SpecError(str(err)) from None
    try:
        return _run_locked(
            sweep, run_dir, cache_dir, lock, address, show_progress, stop_event, stream
        )
    finally:
        lock.release()


def _run_locked(
    sweep: Sweep,
    run_dir: Path,
    cache_dir: Path,
    lock: RunLock,
    address: str | None,
    show_progress: bool,
    stop_event: threading.Event | None,
    stream,
) -> dict[str, Any]:
    stream = stream or sys.stderr

    def say(line: str) -> None:
        print(f"ltsweep: {line}", file=stream, flush=True)

    if lock.took_over:
        say(f"took over the run folder's lock from a driver that is gone ({lock.took_over})")
    try:
        assessment = prepare_run(sweep, run_dir, cache_dir, say)
    except CacheError as err:
        raise SpecError(str(err)) from None
    ready, waiting = work_items(assessment, sweep)
    todo = {
        "pretrain": len(assessment.pretrains_todo),
        "finetune": len(assessment.finetunes_todo),
        "baseline": len(assessment.baselines_todo),
    }
    summary: dict[str, Any] = {"todo": todo, "stored": len(assessment.done), "failed": {}}
    if not ready:
        summary["nothing_to_do"] = True
        return summary

    log_path = run_dir / "logs" / "driver.log"
    log_ray_to_file(log_path)
    if show_progress:
        print(
            f"ltsweep: sweep {sweep.name!r} -> {run_dir} (cache {cache_dir}); to run: "
            f"{todo['pretrain']} pre-trains, {todo['finetune']} fine-tunes, {todo['baseline']} baselines "
            f"({summary['stored']} results already stored); Ray logs in {log_path}",
            file=stream,
            flush=True,
        )
        resumed = resumed_pretrains(cache_dir, assessment.pretrains_todo)
        if resumed:
            print(f"ltsweep: {resumed}", file=stream, flush=True)
    started_ray = not ray.is_initialized()
    with (
        open(log_path, "a") as log_file,
        contextlib.redirect_stdout(log_file),
        contextlib.redirect_stderr(log_file),
    ):
        if started_ray:
            with keep_sigterm():  # ray.init installs its own, which exits with status 15
                if address:
                    ray.init(address=address, **RAY_INIT)
                else:  # a local Ray, stopped by a reaper if this driver is killed
                    start_local_ray(os.cpu_count() or 1, run_dir / "logs")
        try:
            return _run_tuner(
                sweep,
                run_dir,
                cache_dir,
                ready,
                waiting,
                todo,
                summary,
                show_progress,
                stop_event,
                stream,
            )
        finally:
            prune_failed(run_dir / "results")
            heartbeat(run_dir, running=False)
            if started_ray:
                ray.shutdown()
            # again at the end: a writer of an earlier, killed run may have died after the
            # start's cleanup (its Ray worker outlived its driver for a moment)
            cleanup_temp(run_dir)
            cleanup_temp(cache_dir)


def _run_tuner(
    sweep: Sweep,
    run_dir: Path,
    cache_dir: Path,
    ready: list[dict],
    waiting: dict[str, list[dict]],
    todo: dict[str, int],
    summary: dict[str, Any],
    show_progress: bool,
    stop_event: threading.Event | None,
    stream,
) -> dict[str, Any]:
    """Build the Tuner over the ready and waiting work and run it to the end (or the stop event)."""
    configs = [*ready, *(c for cs in waiting.values() for c in cs)]
    _check_resources(configs, ray.cluster_resources())
    stop_event = stop_event or threading.Event()
    progress = None
    if show_progress:  # the ETA prices every config by the cost model from the start
        ex = sweep.execution
        progress = sweep_progress.for_run(
            todo,
            configs,
            ray.cluster_resources(),
            stream,
            cache_dir,
            gpu_tflops=None if ex.device == "cpu" else ex.gpu_tflops,
        )
    failed_units: list[str] = []

    def on_pretrain_failed(config: dict, released: list[dict]) -> None:
        """A failed pre-train fails its fine-tunes too: record them, so status shows it."""
        message = f"pre-train {config['unit']['key']} failed (see {run_dir / 'logs'})"
        for item in released:
            rows = [_failed_row(u, message) for u in item["units"]]
            write_rows(run_dir / "results", f"failed-{item['name']}", rows)
            failed_units.extend(u["key"] for u in item["units"])
            if progress:
                progress.finished("finetune", len(item["units"]), False, 0.0, config=item)

    searcher = DependencySearcher(ready, waiting, stop_event, on_pretrain_failed)
    ctx_blob = {
        "sweep": sweep.model_dump(mode="json"),
        "run_dir": str(run_dir.resolve()),
        "cache_dir": str(cache_dir.resolve()),
    }
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, ctx_blob=ctx_blob), trial_resources
    )
    callbacks = [ProgressCallback(progress, run_dir, stream), *tensorboard()]
    n_items = len(ready) + sum(len(v) for v in waiting.values())
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=n_items,
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(run_dir.resolve()),
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=sweep.execution.max_failures),
            stop=StopOnEvent(stop_event),
        ),
    )
    with ctrl_c(stop_event) as interrupted, progress or contextlib.nullcontext():
        grid = tuner.fit()
    summary["interrupted"] = interrupted.is_set()
    errors = [r for r in grid if r.error is not None or failed_result(r.metrics)]
    summary["failed"] = {"trials": len(errors), "pretrain_dependents": len(failed_units)}
    summary["stopped"] = stop_event.is_set()
    if progress:
        progress.show(final=True)
    return summary


def resumed_pretrains(cache_dir: Path, todo: list) -> str:
    """`resuming 2 pre-trains stopped at epoch 8 of 12 ...` (from their curves), or "" if none
    has run an epoch yet."""
    halfway = [
        (epoch, total) for u in todo for epoch, total in [progress_of(cache_dir, u.key)] if epoch
    ]
    if not halfway:
        return ""
    epochs = sorted({e for e, _ in halfway})
    totals = sorted({t for _, t in halfway})
    at = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}"
    of = f" of {totals[0]}" if len(totals) == 1 else ""
    n = len(halfway)
    return (
        f"resuming {n} pre-train{'s' if n > 1 else ''} stopped at {at}{of} "
        f"(each from its last checkpoint)"
    )


def _failed_row(u: dict, message: str) -> dict:
    """The row of a fine-tune whose Tune trial died before its worker could write one (the
    unit carries all the row needs, its sweep's name included)."""
    return finetune.failed_row(finetune.FinetuneUnit(**u), message)
