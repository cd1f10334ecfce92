"""The driver process around Tune: Ctrl-C, a stop Tune obeys, Ray's logs, the heartbeat.

`ctrl_c` turns the first Ctrl-C into a clean stop (the second one is a KeyboardInterrupt);
`StopOnEvent` is the Tune stopper that ends every trial once the stop event is set (Ctrl-C
or SLURM's pre-emption signal); `log_ray_to_file` sends Ray's and Tune's console output to
the run's driver.log; `heartbeat` writes `<run>/driver.json`, which `ltsweep status` reads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from ray.tune import Stopper

from ltsweep.store.atomic import write_json


@contextlib.contextmanager
def ctrl_c(stop_event: threading.Event):
    """First Ctrl-C (or SIGTERM): stop scheduling and stop the running trials (stored results
    are safe); a second one: raise KeyboardInterrupt at once."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def handler(signum, frame):
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        stop_event.set()

    previous = signal.signal(signal.SIGINT, handler)
    previous_term = signal.signal(signal.SIGTERM, handler)  # `kill`: the same clean stop
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


@contextlib.contextmanager
def keep_sigterm():
    """Keep the SIGTERM handler in place across a call that installs its own (ray.init)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    except SystemExit as stop:  # Ray's handler ran: SIGTERM came during the call
        if stop.code != signal.SIGTERM:
            raise
        raise KeyboardInterrupt from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def heartbeat(run_dir: Path, running: bool, counts: dict | None = None, pending: int = 0) -> None:
    """run_dir/driver.json: the driver's pid, host and liveness, the units it runs by stage
    (`ltsweep status`), and the trials waiting for a node (worker jobs leave when none do)."""
    write_json(
        run_dir / "driver.json",
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "running": running,
            "time": time.time(),
            "units_running": counts or {},
            "trials_pending": pending,
        },
    )


def log_ray_to_file(path: Path) -> None:
    """Ray's and Tune's console chatter goes to the run's driver.log, not the user's terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ray", "ray.tune", "ray.train", "ltsweep"):
        lg = logging.getLogger(name)
        lg.handlers = [
            h
            for h in lg.handlers
            if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler)
        ]
        lg.addHandler(handler)
        lg.propagate = False
        lg.setLevel(logging.INFO)
    # Tune's result grid looks for result.json files that ltsweep turns off on purpose
    # (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS): its "Failed to fetch metrics" warning means nothing
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


class StopOnEvent(Stopper):
    """Stops every trial once the event is set (SLURM preemption): stored results are safe."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def __getstate__(self) -> dict:
        return {"event": None}  # a pickled copy (Tune's state file) never stops anything

    def __setstate__(self, state: dict) -> None:
        self.event = threading.Event()

    def stop_all(self) -> bool:
        return self.event.is_set()
