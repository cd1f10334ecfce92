"""What the driver hands Tune besides the trainable: trial names, the callback that feeds the
progress view and the heartbeat `ltsweep status` reads (and says in driver.log when a trial
lost its worker, and on the terminal, one line each, why a unit failed), and Tune's
TensorBoard writer for the pre-training curves."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TextIO

from ray.tune import Callback

from ltsweep.engine.driver_process import heartbeat
from ltsweep.engine.progress import Progress, units_of
from ltsweep.engine.work_queue import FAILED, failed_result

log = logging.getLogger("ltsweep.driver")


def config_name(c: dict) -> str:
    tag = c["unit"]["key"][:10] if c["kind"] != "finetune" else c["name"]
    return f"{c['kind']}-{tag}"


def trial_name(trial) -> str:
    return config_name(trial.config)


#: a failed unit's line is cut here (its whole traceback is in logs/<trial>.error.txt)
FAILED_LINE_CHARS = 600


def failed_line(config: dict, message: str) -> str:
    """The one terminal line of a unit that failed: which trial, and its error's own line
    (a node without the GPU its plan needs says which node and what it saw)."""
    text = " ".join(str(message).split())
    if len(text) > FAILED_LINE_CHARS:
        text = text[: FAILED_LINE_CHARS - 3] + "..."
    return f"ltsweep: {config_name(config)} failed: {text}"


def tensorboard() -> list:
    """Tune's TensorBoard writer when tensorboardX is installed: `tensorboard --logdir RUN/tune`
    shows the pre-trains' curves live (ltsweep turns Tune's other file loggers off)."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return []
    from ray.tune.logger import TBXLoggerCallback

    return [TBXLoggerCallback()]


class ProgressCallback(Callback):
    """Feeds the progress view and the heartbeat that `ltsweep status` reads; says why a unit
    failed, one line on the terminal (through the view, or `stream` without one) and in
    driver.log."""

    def __init__(
        self, progress: Progress | None, run_dir: Path, stream: TextIO | None = None
    ) -> None:
        self.progress, self.run_dir, self.stream = progress, run_dir, stream
        self.active: dict[str, tuple[str, int, float]] = {}  # trial id -> (stage, units, start)
        self.pending = 0  # trials waiting for a node: worker jobs with none to run leave

    def __getstate__(self) -> dict:
        return {
            "progress": None,
            "run_dir": self.run_dir,
            "stream": None,
            "active": {},
            "pending": 0,
        }

    def _say_failed(self, trial) -> None:
        message = (trial.last_result or {}).get(FAILED)
        if not message:
            return
        line = failed_line(trial.config, message)
        log.warning(line)
        if self.progress is not None:
            self.progress.note(line)
        elif self.stream is not None:
            print(line, file=self.stream, flush=True)

    def _beat(self) -> None:
        counts: dict[str, int] = {}
        for stage, n, _ in self.active.values():
            counts[stage] = counts.get(stage, 0) + n
        heartbeat(self.run_dir, running=True, counts=counts, pending=self.pending)

    def on_step_begin(self, iteration, trials, **info) -> None:
        """The heartbeat carries how many trials wait for a node, written when it changes."""
        pending = sum(1 for t in trials if t.status == "PENDING")
        if pending != self.pending:
            self.pending = pending
            self._beat()

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
        if failed_result(trial.last_result):
            self._say_failed(trial)
        self._end(trial, ok=not failed_result(trial.last_result))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial, ok=False)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """Tune restarts a trial whose worker was lost: say so in driver.log."""
        failures = trial.run_metadata.num_failures
        log.warning(
            "%s lost its worker (its node or process died); retry %d of at most %d on the "
            "nodes that are left",
            trial_name(trial),
            failures,
            trial.max_failures,
        )
