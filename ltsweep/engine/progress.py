"""The one live progress view of a sweep: units done / running / failed / to do per stage, ETA.

Counts are of units (a pre-train, a fine-tune trial, a baseline run), not of Tune trials, so
the view reads the same whether fine-tunes are stacked or not.

On a terminal the view is a few lines redrawn in place by `rich` (one line per stage with a
bar, then the elapsed time and the ETA), each line cut to the terminal's width whatever it
is, so nothing wraps and no refresh leaves a row behind. Elsewhere (CI, a SLURM log) one
plain line a minute (`min_interval`), plus the final one.

The ETA is there from the start: every Tune trial's cost in FLOPs comes from the plan's cost
model (`ltsweep.sweep.estimate`), and seconds per FLOP are measured per stage as trials
finish, and before that on the running trials that say how far they are (`fraction_of`: a
pre-train's curve, a baseline's progress file, read from the cache). A stage with nothing
measured yet takes its assumed speed (`execution.gpu_tflops` per GPU, `CPU_FLOPS_PER_CORE`
on the CPU) scaled as the measured stages' was; with nothing measured anywhere, the assumed
speed slowed by how far the running trials already are behind it. (The assumed CPU speed
can be 25x off: bf16 on a width-16 ResNet18 runs at ~130 GFLOP/s per core here, a tiny
smoke model at ~5; measuring running trials makes the ETA right within an epoch or two.)
The remaining work (trials not started, plus what is left of the running ones) is divided by
the number of trials the cluster runs at once.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

STAGES = ("pretrain", "finetune", "baseline")
#: assumed sustained FLOP/s of one CPU core in a trial of each stage, before anything is
#: measured (the smoke sweep on 2 shared cores: pre-trains ~5, baselines ~15 GFLOP/s, the
#: fine-tunes' matrix products on stored features much faster)
CPU_FLOPS_PER_CORE = {"pretrain": 5e9, "finetune": 5e10, "baseline": 1.5e10}


def _fmt_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """Counts and timing of a sweep's units, drawn live (see the module docstring).

    `cost_of(config)` gives a Tune config's FLOPs and `pending` lists the configs that will
    be handed out (both optional: without them the ETA falls back to seconds per unit,
    once a unit of each stage has finished); `prior_rate` is the assumed FLOP/s of one trial
    per stage and `slots` how many trials of a stage the cluster runs at once.
    """

    def __init__(
        self,
        todo: dict[str, int],
        stream: TextIO | None = None,
        min_interval: float = 60.0,
        *,
        cost_of: Callable[[dict], float] | None = None,
        pending: Iterable[dict] = (),
        prior_rate: Mapping[str, float] | None = None,
        slots: Mapping[str, int] | None = None,
        fraction_of: Callable[[dict], tuple[float, float] | None] | None = None,
    ) -> None:
        self.total = Counter(todo)
        self.done: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self.min_interval = min_interval
        self._last = 0.0
        self._lock = threading.RLock()
        self._printed = ""
        self._seconds: Counter[str] = Counter()  # unit-seconds of finished units, per stage
        self._cost_of = cost_of
        self._pending_cost: Counter[str] = Counter()  # FLOPs of trials not started yet
        for config in pending:
            stage, _ = units_of(config)
            self._pending_cost[stage] += self._cost(config)
        self._done_cost: Counter[str] = Counter()  # FLOPs and seconds of finished trials
        self._done_sec: Counter[str] = Counter()
        self._done_assumed: Counter[str] = Counter()  # their seconds at the assumed speed
        self._active: dict[Any, tuple[str, int, float, float]] = {}  # trial -> stage, n, cost, t0
        self._configs: dict[Any, dict] = {}  # trial -> its config, for `fraction_of`
        self._fraction_of = fraction_of
        self._fractions: dict[Any, tuple[float, tuple[float, float] | None]] = {}  # when, what
        self.prior_rate = dict(prior_rate or {})
        self.slots = {s: max(1, int(n)) for s, n in (slots or {}).items()}
        self._live: Any = None
        self._drawn: tuple[int, list[int]] | None = None  # width, line lengths of the view
        self._ticker: threading.Thread | None = None

    # ------------------------------------------------------------------ events

    def _cost(self, config: dict | None) -> float:
        if config is None or self._cost_of is None:
            return 0.0
        try:
            return max(0.0, float(self._cost_of(config)))
        except Exception:  # noqa: BLE001 - an unknown config costs nothing, it never stops a run
            return 0.0

    def started(self, stage: str, n: int, trial: Any = None, config: dict | None = None) -> None:
        with self._lock:
            self.running[stage] += n
            cost = self._cost(config)
            self._pending_cost[stage] = max(0.0, self._pending_cost[stage] - cost)
            key = trial if trial is not None else object()
            self._active[key] = (stage, n, cost, time.monotonic())
            if config is not None:
                self._configs[key] = config
        self.show()

    def finished(
        self,
        stage: str,
        n: int,
        ok: bool,
        seconds: float,
        trial: Any = None,
        config: dict | None = None,
    ) -> None:
        """A trial ended (`trial` as given to `started`); with `config` instead of `trial`,
        units that never started (their pre-train failed) are taken off the work left."""
        with self._lock:
            (self.done if ok else self.failed)[stage] += n
            self._seconds[stage] += seconds
            key = trial
            if trial is None and config is None:
                # an anonymous trial: the oldest one of this stage
                key = next((k for k, v in self._active.items() if v[0] == stage), None)
            active = self._active.pop(key, None) if key is not None else None
            if active is not None:
                self._configs.pop(key, None)
                self._fractions.pop(key, None)
                self.running[stage] -= n
                self._done_cost[stage] += active[2]
                self._done_sec[stage] += seconds
                if self.prior_rate.get(stage):
                    self._done_assumed[stage] += active[2] / self.prior_rate[stage]
            elif config is not None:
                cost = self._cost(config)
                self._pending_cost[stage] = max(0.0, self._pending_cost[stage] - cost)
        self.show()

    # ------------------------------------------------------------------ ETA

    def _fraction(self, trial: Any, now: float) -> tuple[float, float] | None:
        """(share done, seconds it took) of a running trial, read at most every 5 s."""
        config = self._configs.get(trial)
        if self._fraction_of is None or config is None:
            return None
        read_at, value = self._fractions.get(trial, (-1e9, None))
        if now - read_at >= 5.0:
            try:
                value = self._fraction_of(config)
            except Exception:  # noqa: BLE001 - a view of the training never stops the run
                value = None
            self._fractions[trial] = (now, value)
        return value

    def _in_flight(self, now: float) -> tuple[Counter[str], Counter[str]]:
        """FLOPs done and seconds taken so far by running trials that say how far they are."""
        cost, sec = Counter(), Counter()
        for trial, (st, _, c, _t0) in self._active.items():
            got = self._fraction(trial, now)
            if c > 0 and got is not None and 0 < got[0] < 1:
                cost[st] += got[0] * c
                sec[st] += got[1]
        return cost, sec

    def _sec_per_flop(self, stage: str, now: float) -> float | None:
        if self._done_cost[stage] > 0 and self._done_sec[stage] > 0:
            return self._done_sec[stage] / self._done_cost[stage]
        run_cost, run_sec = self._in_flight(now)
        if run_cost[stage] > 0:
            return run_sec[stage] / run_cost[stage]
        k = None
        assumed = sum(self._done_assumed.values())
        assumed += sum(
            run_cost[st] / self.prior_rate[st] for st in run_cost if self.prior_rate.get(st)
        )
        measured = sum(self._done_sec.values()) + sum(
            run_sec[st] for st in run_cost if self.prior_rate.get(st)
        )
        if assumed > 0 and self.prior_rate.get(stage):
            # other stages measured: this stage's assumed speed, scaled as theirs was
            k = measured / assumed / self.prior_rate[stage]
        elif self._done_cost.total() > 0 and self._done_sec.total() > 0:
            k = self._done_sec.total() / self._done_cost.total()
        if k is None and self.prior_rate.get(stage):
            # nothing finished yet: the assumed speed, slowed by how far the running trials
            # already are behind it (any stage: the machine is slower than assumed)
            behind = [
                (now - t0) * self.prior_rate[st] / c
                for st, _, c, t0 in self._active.values()
                if c > 0 and self.prior_rate.get(st)
            ]
            k = max([1.0, *behind]) / self.prior_rate[stage]
        # a running trial already slower than assumed: the assumption is too fast
        for st, _, c, t0 in self._active.values():
            if st == stage and c > 0:
                k = max(k or 0.0, (now - t0) / c)
        return k

    def eta(self) -> float | None:
        """Seconds left: FLOPs left per stage x measured seconds per FLOP / trials at once.

        Without costs (no `cost_of`), seconds per unit of the finished units of each stage
        instead; None until that is known for every stage with work left.
        """
        with self._lock:
            now = time.monotonic()
            if self._cost_of is None:
                return self._eta_per_unit()
            wall, longest = 0.0, 0.0
            for stage in STAGES:
                left = self.total[stage] - self.done[stage] - self.failed[stage]
                if left <= 0:
                    continue
                k = self._sec_per_flop(stage, now)
                if k is None:
                    return None
                work = self._pending_cost[stage] * k
                for trial, (st, _, c, t0) in self._active.items():
                    if st == stage:
                        got = self._fraction(trial, now)
                        if got is not None and got[0] > 0:  # its own speed, on its own rest
                            rest = got[1] / got[0] * (1 - got[0])
                        else:
                            rest = max(0.0, c * k - (now - t0))
                        work += rest
                        longest = max(longest, rest)
                wall += work / self.slots.get(stage, 1)
            return max(wall, longest)

    def _eta_per_unit(self) -> float | None:
        remaining = 0.0
        for stage in STAGES:
            left = self.total[stage] - self.done[stage] - self.failed[stage]
            finished = self.done[stage] + self.failed[stage]
            if left <= 0:
                continue
            if not finished:
                return None
            parallel = self.slots.get(stage) or max(1, self.running[stage])
            remaining += left * self._seconds[stage] / finished / parallel
        return remaining

    # ------------------------------------------------------------------ drawing

    def counts(self, stage: str) -> str:
        todo = self.total[stage] - self.done[stage] - self.failed[stage] - self.running[stage]
        return (
            f"{self.done[stage]}/{self.total[stage]} done, {self.running[stage]} running, "
            f"{self.failed[stage]} failed, {max(0, todo)} to do"
        )

    def line(self) -> str:
        """The one-line view (off a terminal)."""
        with self._lock:
            parts = [f"{s} {self.counts(s)}" for s in STAGES if self.total[s]]
            eta = self.eta()
            elapsed = _fmt_seconds(time.monotonic() - self.start)
        return (
            f"[{elapsed}] "
            + " | ".join(parts)
            + (f" | ETA {_fmt_seconds(eta)}" if eta is not None else "")
        )

    def __rich_console__(self, console: Any, options: Any) -> Any:
        """The terminal view: a line per stage (name, bar, counts) and an elapsed / ETA line,
        each cut to the width rich offers (the terminal's), so nothing ever wraps."""
        from rich.text import Text

        width = max(1, options.max_width)
        with self._lock:
            stages = [s for s in STAGES if self.total[s]]
            counts = {s: self.counts(s) for s in stages}
            snap = {
                s: (self.total[s], self.done[s], self.failed[s], self.running[s]) for s in stages
            }
            eta = self.eta()
            elapsed = time.monotonic() - self.start
        lines: list[int] = []  # the drawn lines' lengths
        # one bar width for every stage, so the bars line up
        longest = max((len(c) for c in counts.values()), default=0)
        bar_width = min(40, width - 9 - longest - 1)
        for stage in stages:
            total, done, failed, running = snap[stage]
            head = f"{stage:<8} "
            text = Text(head, style="bold")
            if bar_width >= 10:
                text.append_text(_bar(bar_width, total, done, failed, running))
                text.append(" ")
            text.append(counts[stage])
            text.truncate(width, overflow="ellipsis")
            lines.append(text.cell_len)
            yield text
        tail = f"elapsed {_fmt_seconds(elapsed)}, ETA " + (
            _fmt_seconds(eta) if eta is not None else "not known yet"
        )
        text = Text(tail, style="dim")
        text.truncate(width, overflow="ellipsis")
        lines.append(text.cell_len)
        self._drawn = (width, lines)  # what `_refresh_live` needs after a resize
        yield text

    def show(self, final: bool = False) -> None:
        """Draw the view. On a terminal the live display (`with progress:`) redraws itself and
        `final` prints the last state for good. Off a terminal: only when counts changed (or a minute passed),
        and never twice within `min_interval` seconds: the ticker prints what was held back."""
        with self._lock:
            if self.tty:
                if final:  # the live display (if any) goes, the last state stays
                    self._stop_live()
                    self._console().print(self)
                return
            now = time.monotonic()
            text = self.line()
            counts = text.split("] ", 1)[-1].split(" | ETA")[0]
            if not final:
                changed = counts != self._printed
                if (not changed and now - self._last < 60) or now - self._last < self.min_interval:
                    return
            self._last, self._printed = now, counts
            self.stream.write(text + "\n")
            self.stream.flush()

    def note(self, line: str) -> None:
        """Print `line` for good above the view (a failed unit's error), never redrawn over."""
        with self._lock:
            if self.tty:
                self._console().print(line, markup=False, highlight=False, soft_wrap=True)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()

    def _console(self) -> Any:
        from rich.console import Console

        if not hasattr(self, "_rich_console"):
            self._rich_console = Console(file=self.stream, highlight=False)
        return self._rich_console

    def _refresh_live(self) -> None:
        """Redraw in place. After the terminal's width changed, the last drawing's lines
        were re-wrapped by the terminal into more (or fewer) rows: rich is told how many, so
        it moves up over all of them and no stale row stays behind."""
        with self._lock:
            live = self._live
            if live is None:
                return
            try:
                width = live.console.size.width
                render = live._live_render  # rich's own record of the last drawing's shape
                drawn = self._drawn
                if drawn and width != drawn[0] and render._shape is not None:
                    rows = sum(max(1, -(-n // width)) for n in drawn[1])
                    render._shape = (width, rows)
            except Exception:  # noqa: BLE001 - a rich without these internals: plain refresh
                pass
            live.refresh()

    def _stop_live(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def __enter__(self) -> Progress:
        """Start the live display (terminal) or the ticker that prints held-back lines."""
        self._stop = threading.Event()
        if self.tty:
            from rich.live import Live

            self._live = Live(
                self,
                console=self._console(),
                auto_refresh=False,  # refreshed by the ticker, which minds resizes
                transient=True,  # `show(final=True)` prints the last state once
                redirect_stdout=False,  # the driver sends stdout/stderr to driver.log
                redirect_stderr=False,
            )
            self._live.start(refresh=True)

        def tick() -> None:
            while not self._stop.wait(0.5 if self.tty else self.min_interval):
                if self.tty:
                    self._refresh_live()
                else:
                    self.show()

        self._ticker = threading.Thread(target=tick, name="ltsweep-progress", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
            self._ticker = None
        self._refresh_live()


def _bar(width: int, total: int, done: int, failed: int, running: int) -> Any:
    from rich.text import Text

    total = max(1, total)
    n_done = round(width * done / total)
    n_failed = min(width - n_done, round(width * failed / total))
    n_running = min(width - n_done - n_failed, round(width * running / total))
    rest = width - n_done - n_failed - n_running
    bar = Text()
    bar.append("━" * n_done, style="green")
    bar.append("━" * n_failed, style="red")
    bar.append("━" * n_running, style="yellow")
    bar.append("━" * rest, style="grey35")
    return bar


#: a Tune config's price in FLOPs (`ltsweep.sweep.estimate`), set once when its units are
#: at hand (`work_queue.priced`): the view reads it and never goes back to the sweep
FLOPS = "flops"


def units_of(config: dict) -> tuple[str, int]:
    """(progress stage, number of units) of a Tune config."""
    if config["kind"] == "finetune":
        return "finetune", len(config["units"])
    return config["kind"], 1


def resources_of(config: dict) -> tuple[float, float]:
    """(CPUs, GPUs) one Tune trial of `config` asks Ray for: what its units carry from the
    plan (`resources.<kind>`; the units of a fine-tune group share their kind's)."""
    unit = config["units"][0] if config["kind"] == "finetune" else config["unit"]
    return float(unit["cpu"]), float(unit["gpu"])


def resources_by_kind(configs: Iterable[dict]) -> dict[str, tuple[float, float]]:
    """(CPUs, GPUs) per unit kind among `configs` (every trial of a kind asks the same)."""
    out: dict[str, tuple[float, float]] = {}
    for config in configs:
        out.setdefault(config["kind"], resources_of(config))
    return out
