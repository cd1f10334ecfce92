"""The sweep driver on Ray Tune: pre-trains first, their fine-tunes as soon as features exist.

Tune has no trial dependencies. A custom `Searcher` holds the ready work: at the start, the
pre-trains to run and the fine-tune groups whose features are already stored; when a
pre-train trial completes, `on_trial_complete` releases that pre-train's fine-tune groups,
so they run while other pre-trains are still training. `suggest` answers None while work is
still locked behind a running pre-train, and FINISHED when nothing is left. Each Tune trial
asks for the resources of its kind (`tune.with_resources` with a function of the config).

Results are written by the workers themselves (atomically, into the run folder); Tune's own
experiment state is kept under `<run>/tune/` for debugging only and never read back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
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
from ray.tune import Callback  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

from ltsweep.engine import progress as progress_view
from ltsweep.engine.driver_process import (
    StopOnEvent,
    ctrl_c,
    heartbeat,
    keep_sigterm,
    log_ray_to_file,
)
from ltsweep.engine.progress import Progress
from ltsweep.planning.plan import KINDS, make_plan
from ltsweep.planning.state import assess
from ltsweep.store import shared_rows
from ltsweep.store.atomic import cleanup_temp, write_json, write_text
from ltsweep.store.cache import CacheError
from ltsweep.store.curves import progress_of
from ltsweep.store.lock import LockHeld, RunLock
from ltsweep.store.results import prune_failed, quarantine_results, write_rows
from ltsweep.sweep.schema import SpecError, Sweep, check_data_root
from ltsweep.units import baseline, finetune, pretrain
from ltsweep.units.base import RunContext

log = logging.getLogger("ltsweep.driver")


def _work_items(assessment, sweep: Sweep) -> tuple[list[dict], dict[str, list[dict]]]:
    """Tune configs: what is ready now, and what waits for a pre-train (by pre-train key).

    Ready work is handed out in this order: pre-trains (they unlock the most), then fine-tune
    groups whose features are stored (cheap; a resumed or second sweep has many), then the
    baselines (long); fine-tunes released later by a finished pre-train jump ahead of the
    baselines still queued (`DependencySearcher.on_trial_complete`).
    """
    pending = {p.key for p in assessment.pretrains_todo}
    ready = [pretrain.config(p) for p in assessment.pretrains_todo]
    waiting: dict[str, list[dict]] = {}
    for group in finetune.finetune_groups(sweep, assessment.finetunes_todo):
        if group[0].depends_on in pending:
            waiting.setdefault(group[0].depends_on, []).append(finetune.config(group))
        else:
            ready.append(finetune.config(group))
    ready += [baseline.config(b) for b in assessment.baselines_todo]
    return ready, waiting


FAILED = "failed"  # the key of a trial's report whose unit raised (its value: the error)


def failed_result(result: dict | None) -> bool:
    return bool((result or {}).get(FAILED))


def units_of(config: dict) -> tuple[str, int]:
    """(progress stage, number of units) of a Tune config."""
    if config["kind"] == "finetune":
        return "finetune", len(config["units"])
    return config["kind"], 1


def _trainable(config: dict, ctx_blob: dict) -> None:
    """One Tune trial: run one unit of work in the worker, report once.

    A unit that raises is recorded here (its failed rows and traceback under logs/, written
    by the unit itself or below) and reported as `failed`: retrying it at once would fail the
    same way, and the next run retries it. Only a trial whose worker was lost (its node or
    process died) reaches Tune as an error, and Tune retries it on the nodes that are left
    (`execution.max_failures`); the unit resumes from its checkpoint in the cache.
    """
    from ltsweep.device import use_threads  # torch: in the worker, never in the driver

    sweep = Sweep.model_validate(ctx_blob["sweep"])
    ctx = RunContext(
        sweep, Path(ctx_blob["run_dir"]), Path(ctx_blob["cache_dir"]), report=tune.report
    )
    kind = config["kind"]
    use_threads(ctx_blob["cpus"][kind])
    t0 = time.perf_counter()
    try:
        KINDS[kind].run_config(ctx, config)
    except Exception as err:  # noqa: BLE001 - recorded, reported, retried by the next run
        logs = ctx.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        write_text(logs / f"{_config_name(config)}.error.txt", traceback.format_exc())
        message = f"{type(err).__name__}: {err}"
        tune.report({"seconds": time.perf_counter() - t0, FAILED: message})
        return
    tune.report({"seconds": time.perf_counter() - t0})


class DependencySearcher(Searcher):
    """Hands out ready work; a finished pre-train unlocks its fine-tunes.

    Live driver-side objects (the stop event, the failure callback) are dropped when Tune
    pickles the searcher into its experiment state, which ltsweep never reads back.
    """

    def __init__(
        self,
        ready: list[dict],
        waiting: dict[str, list[dict]],
        stop_event: threading.Event,
        on_pretrain_failed: Callable[[dict, list[dict]], None],
    ) -> None:
        super().__init__()
        self.ready, self.waiting, self.running = list(ready), dict(waiting), {}
        self.stop_event, self.on_pretrain_failed = stop_event, on_pretrain_failed

    def suggest(self, trial_id: str):
        if self.stop_event.is_set():
            return Searcher.FINISHED
        if self.ready:
            self.running[trial_id] = self.ready.pop(0)
            return self.running[trial_id]
        return None if self.waiting else Searcher.FINISHED

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        config = self.running.pop(trial_id, None)
        if config is None or config["kind"] != "pretrain":
            return
        released = self.waiting.pop(config["unit"]["key"], [])
        if error or failed_result(result):
            self.on_pretrain_failed(config, released)
        else:
            self.ready[0:0] = released  # fine-tunes are cheap: run them before queued long units

    def __getstate__(self) -> dict:
        return {
            "ready": self.ready,
            "waiting": self.waiting,
            "running": self.running,
            "stop_event": None,
            "on_pretrain_failed": None,
        }

    def save(self, checkpoint_path: str) -> None:
        write_json(checkpoint_path, {"ready": self.ready, "waiting": self.waiting})

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.ready, self.waiting = state["ready"], state["waiting"]


def _check_resources(sweep: Sweep, cluster: dict[str, float]) -> None:
    for kind in ("pretrain", "finetune"):
        r = getattr(sweep.resources, kind)
        if r.gpu > 0 and cluster.get("GPU", 0) <= 0:
            raise SpecError(
                f"resources.{kind}.gpu: {r.gpu} GPU asked but the Ray cluster has none "
                f"(set resources.{kind}.gpu: 0 to run on the CPU)"
            )
        if r.cpu > cluster.get("CPU", 0):
            raise SpecError(
                f"resources.{kind}.cpu: {r.cpu} CPUs asked but the Ray cluster has {cluster.get('CPU', 0):g}"
            )


def prepare_run(sweep: Sweep, run_dir: Path, cache_dir: Path, say=None):
    """Validate, repair what is damaged, write the frozen sweep copy and run.json, and assess
    what is stored. Called holding the run folder's lock: damaged results files and cache
    entries are moved to a `.quarantine/` folder (one line each through `say`) and their units
    run again."""
    check_data_root(sweep)
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
    ready, waiting = _work_items(assessment, sweep)
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
            kwargs: dict[str, Any] = (
                {"address": address} if address else {"num_cpus": os.cpu_count()}
            )
            with keep_sigterm():  # ray.init installs its own, which exits with status 15
                ray.init(
                    **kwargs,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                    configure_logging=False,
                )
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
    _check_resources(sweep, ray.cluster_resources())
    stop_event = stop_event or threading.Event()
    progress = None
    if show_progress:  # the ETA prices every config by the cost model from the start
        configs = [*ready, *(c for cs in waiting.values() for c in cs)]
        progress = progress_view.for_sweep(sweep, todo, configs, ray.cluster_resources(), stream)
    failed_units: list[str] = []

    def on_pretrain_failed(config: dict, released: list[dict]) -> None:
        """A failed pre-train fails its fine-tunes too: record them, so status shows it."""
        message = f"pre-train {config['unit']['key']} failed (see {run_dir / 'logs'})"
        for item in released:
            rows = [_failed_row(sweep, u, message) for u in item["units"]]
            write_rows(run_dir / "results", f"failed-{item['name']}", rows)
            failed_units.extend(u["key"] for u in item["units"])
            if progress:
                progress.finished("finetune", len(item["units"]), False, 0.0, config=item)

    searcher = DependencySearcher(ready, waiting, stop_event, on_pretrain_failed)
    res = {name: kind.resources(sweep) for name, kind in KINDS.items()}

    def resources(config: dict):
        r = res[config["kind"]]
        return tune.PlacementGroupFactory([{"CPU": r.cpu, "GPU": r.gpu}])

    ctx_blob = {
        "sweep": sweep.model_dump(mode="json"),
        "run_dir": str(run_dir.resolve()),
        "cache_dir": str(cache_dir.resolve()),
        "cpus": {k: r.cpu for k, r in res.items()},
    }
    trainable = tune.with_resources(tune.with_parameters(_trainable, ctx_blob=ctx_blob), resources)
    callbacks = [_ProgressCallback(progress, run_dir), *_tensorboard()]
    n_items = len(ready) + sum(len(v) for v in waiting.values())
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=n_items,
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
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


def _tensorboard() -> list:
    """Tune's TensorBoard writer when tensorboardX is installed: `tensorboard --logdir RUN/tune`
    shows the pre-trains' curves live (ltsweep turns Tune's other file loggers off)."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return []
    from ray.tune.logger import TBXLoggerCallback

    return [TBXLoggerCallback()]


def _config_name(c: dict) -> str:
    tag = c["unit"]["key"][:10] if c["kind"] != "finetune" else c["name"]
    return f"{c['kind']}-{tag}"


def _trial_name(trial) -> str:
    return _config_name(trial.config)


def _failed_row(sweep: Sweep, u: dict, message: str) -> dict:
    """The row of a fine-tune whose Tune trial died before its worker could write one."""
    return finetune.failed_row(sweep.name, finetune.FinetuneUnit(**u), message)


class _ProgressCallback(Callback):
    """Feeds the progress view and the heartbeat that `ltsweep status` reads."""

    def __init__(self, progress: Progress | None, run_dir: Path) -> None:
        self.progress, self.run_dir = progress, run_dir
        self.active: dict[str, tuple[str, int, float]] = {}  # trial id -> (stage, units, start)

    def __getstate__(self) -> dict:
        return {"progress": None, "run_dir": self.run_dir, "active": {}}

    def _beat(self) -> None:
        counts: dict[str, int] = {}
        for stage, n, _ in self.active.values():
            counts[stage] = counts.get(stage, 0) + n
        heartbeat(self.run_dir, running=True, counts=counts)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.active:  # restarted after its worker was lost
            return
        stage, n = units_of(trial.config)
        self.active[trial.trial_id] = (stage, n, time.monotonic())
        if self.progress:
            self.progress.started(stage, n, trial=trial.trial_id, config=trial.config)
        self._beat()

    def _end(self, trial, ok: bool) -> None:
        if trial.trial_id not in self.active:
            return
        stage, n, t0 = self.active.pop(trial.trial_id)
        if self.progress:
            self.progress.finished(stage, n, ok, time.monotonic() - t0, trial=trial.trial_id)
        self._beat()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end(trial, ok=not failed_result(trial.last_result))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial, ok=False)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """Tune restarts a trial whose worker was lost: say so in driver.log."""
        failures = trial.run_metadata.num_failures
        log.warning(
            "%s lost its worker (its node or process died); retry %d of at most %d on the "
            "nodes that are left",
            _trial_name(trial),
            failures,
            trial.max_failures,
        )
