"""The one live progress view of a sweep: units done / running / failed / to do per stage, ETA.

Counts are of units (a pre-train, a fine-tune trial, a baseline run), not of Tune trials, so
the view reads the same whether fine-tunes are stacked or not. On a terminal the line is
redrawn in place; elsewhere (CI, a SLURM log) a line is printed when counts change, at most
every few seconds, plus the final one.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import TextIO

STAGES = ("pretrain", "finetune", "baseline")


def _fmt_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    def __init__(
        self, todo: dict[str, int], stream: TextIO | None = None, min_interval: float = 5.0
    ) -> None:
        self.total = Counter(todo)
        self.done: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.min_interval = min_interval
        self._last = 0.0
        self._lock = threading.RLock()
        self._printed = ""
        self._seconds: Counter[str] = Counter()  # unit-seconds of finished units, per stage

    def started(self, stage: str, n: int) -> None:
        with self._lock:
            self.running[stage] += n
        self.show()

    def finished(self, stage: str, n: int, ok: bool, seconds: float) -> None:
        with self._lock:
            self.running[stage] -= n
            (self.done if ok else self.failed)[stage] += n
            self._seconds[stage] += seconds
        self.show()

    def eta(self) -> float | None:
        """Remaining time, from the measured seconds per unit of each stage and its parallelism."""
        remaining = 0.0
        for stage in STAGES:
            left = self.total[stage] - self.done[stage] - self.failed[stage]
            finished = self.done[stage] + self.failed[stage]
            if left <= 0:
                continue
            if not finished:
                return None
            parallel = max(1, self.running[stage])
            remaining += left * self._seconds[stage] / finished / parallel
        return remaining

    def line(self) -> str:
        parts = []
        for stage in STAGES:
            if not self.total[stage]:
                continue
            todo = self.total[stage] - self.done[stage] - self.failed[stage] - self.running[stage]
            parts.append(
                f"{stage} {self.done[stage]}/{self.total[stage]} done, {self.running[stage]} running, "
                f"{self.failed[stage]} failed, {max(0, todo)} to do"
            )
        eta = self.eta()
        elapsed = _fmt_seconds(time.monotonic() - self.start)
        return (
            f"[{elapsed}] "
            + " | ".join(parts)
            + (f" | ETA {_fmt_seconds(eta)}" if eta is not None else "")
        )

    def show(self, final: bool = False) -> None:
        """Draw the line; off a terminal, only when counts changed (or a minute passed), and
        never twice within `min_interval` seconds: the ticker prints what was held back."""
        with self._lock:
            now = time.monotonic()
            text = self.line()
            counts = text.split("] ", 1)[-1].split(" | ETA")[0]
            if not self.tty and not final:
                changed = counts != self._printed
                if (not changed and now - self._last < 60) or now - self._last < self.min_interval:
                    return
            self._last, self._printed = now, counts
            if self.tty:
                self.stream.write("\r\033[K" + text + ("\n" if final else ""))
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        """Start the ticker: the elapsed time advances on a terminal, held-back lines get printed."""
        self._stop = threading.Event()

        def tick() -> None:
            while not self._stop.wait(1.0 if self.tty else self.min_interval):
                self.show()

        self._ticker = threading.Thread(target=tick, name="ltsweep-progress", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._ticker.join(timeout=5)
