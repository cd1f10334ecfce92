"""The live progress view: it fits any terminal width, and its ETA is there from the start,
priced by the cost model and scaled by the speed measured as trials finish."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from ltsweep.engine import sweep_progress as SP
from ltsweep.engine.progress import Progress


def _cfg(kind: str, n: int = 1) -> dict:
    return {"kind": kind, "units": [{}] * n} if kind == "finetune" else {"kind": kind, "unit": {}}


COST = {"pretrain": 1e10, "finetune": 1e8, "baseline": 5e9}


def _progress(stream=None, slots: int = 2) -> Progress:
    pending = [_cfg("pretrain"), _cfg("pretrain"), _cfg("finetune", 20), _cfg("finetune", 20)]
    pending += [_cfg("baseline")] * 20
    return Progress(
        {"pretrain": 2, "finetune": 40, "baseline": 20},
        stream=stream or io.StringIO(),
        cost_of=lambda c: COST[c["kind"]],
        pending=pending,
        prior_rate={s: 1e9 for s in COST},  # 1 GFLOP/s per trial
        slots={s: slots for s in COST},
    )


@pytest.mark.parametrize("width", [12, 20, 40, 80, 120, 160, 240])
def test_every_line_fits_the_terminal(width: int) -> None:
    p = _progress()
    p.started("pretrain", 1, trial="a", config=_cfg("pretrain"))
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    console.print(p)
    lines = console.file.getvalue().splitlines()
    assert len(lines) == 4  # a line per stage, then elapsed / ETA: nothing wrapped
    assert max(len(line) for line in lines) <= width
    if width >= 80:
        assert "1 running" in lines[0] and "━" in lines[0]
        assert lines[3].startswith("elapsed ") and "ETA " in lines[3]


def test_eta_from_the_start_then_scaled_by_measured_speed() -> None:
    p = _progress(slots=2)
    # nothing measured: 2e10 + 2e8 + 1e11 FLOPs at 1 GFLOP/s, 2 trials at once
    assert p.eta() == pytest.approx((2e10 + 2 * 1e8 + 20 * 5e9) / 1e9 / 2, rel=1e-3)
    p.started("pretrain", 1, trial="a", config=_cfg("pretrain"))
    p.started("pretrain", 1, trial="b", config=_cfg("pretrain"))
    # a pre-train took 20 s for 1e10 FLOPs: every stage is now priced at half the speed
    p.finished("pretrain", 1, True, 20.0, trial="a")
    eta = p.eta()
    assert eta is not None
    left = 1e10 + 2 * 1e8 + 20 * 5e9  # b (just started) + the rest
    assert eta == pytest.approx(left * 2e-9 / 2, rel=0.01)
    # trials that never start (their pre-train failed) leave the work left
    p.finished("finetune", 20, False, 0.0, config=_cfg("finetune", 20))
    assert p.eta() < eta
    assert p.failed["finetune"] == 20 and p.running["pretrain"] == 1


def test_a_running_trial_slower_than_assumed_raises_the_eta() -> None:
    p = _progress(slots=1)
    p.started("pretrain", 1, trial="a", config=_cfg("pretrain"))
    before = p.eta()
    p._active["a"] = ("pretrain", 1, 1e10, time.monotonic() - 30)  # 30 s in, 10 s assumed
    after = p.eta()
    assert after is not None and before is not None and after > 2 * before


def test_running_trials_that_say_how_far_they_are_price_every_stage() -> None:
    """A pre-train half done after 100 s of training (10 s assumed for all of it) prices the
    rest of itself at its own speed, and the stages with nothing measured 20x slower than
    assumed, before any trial has finished."""
    told = {"pretrain": (0.5, 100.0)}
    p = _progress(slots=1)
    p._fraction_of = lambda c: told.get(c["kind"])
    p.started("pretrain", 1, trial="a", config=_cfg("pretrain"))
    k = 100.0 / (0.5 * 1e10)  # seconds per FLOP measured on "a": 20x the assumed 1e-9
    rest_a = 100.0  # the other half of "a" at its own speed
    pending = 1e10 * k + (2 * 1e8 + 20 * 5e9) * 1e-9 * 20
    assert p.eta() == pytest.approx(rest_a + pending, rel=1e-3)
    # a baseline that says how far it is prices the baselines by its own speed instead
    told["baseline"] = (0.25, 10.0)  # 1.25e9 FLOPs in 10 s: 8e-9 s per FLOP
    p.started("baseline", 1, trial="b", config=_cfg("baseline"))
    p._fractions.clear()
    eta = p.eta()
    baselines = 19 * 5e9 * 8e-9 + 30.0  # the 19 not started, then the rest of "b"
    assert eta == pytest.approx(rest_a + 1e10 * k + 2e8 * 1e-9 * 20 + baselines, rel=1e-3)
    # a fraction_of that fails, or says nothing, leaves the older estimate
    p._fraction_of = lambda c: 1 / 0
    p._fractions.clear()
    assert p.eta() is not None


def test_fraction_done_reads_the_curve_and_the_progress_file(tmp_path) -> None:
    from ltsweep.store.curves import write_curve
    from ltsweep.store.unit_progress import PROGRESS, write_progress
    from ltsweep.units.baseline import checkpoint_dir

    pre = {"kind": "pretrain", "unit": {"key": "p1"}}
    base = {"kind": "baseline", "unit": {"key": "b1"}}
    assert SP.fraction_done(tmp_path, pre) is None and SP.fraction_done(tmp_path, base) is None
    records = [
        {"epoch": e, "loss": 1.0, "knn_acc": None, "lr": 0.1, "seconds": 3.0 * e} for e in (1, 2)
    ]
    write_curve(tmp_path, "p1", 8, records)
    assert SP.fraction_done(tmp_path, pre) == (0.25, 6.0)
    write_progress(checkpoint_dir(tmp_path, "b1"), 3, 60, 57.0)
    assert SP.fraction_done(tmp_path, base) == (0.05, 57.0)
    (checkpoint_dir(tmp_path, "b1") / PROGRESS).write_text("{damaged")
    assert SP.fraction_done(tmp_path, base) is None
    assert SP.fraction_done(tmp_path, {"kind": "finetune", "units": []}) is None


def test_without_costs_the_eta_waits_for_a_unit_of_each_stage() -> None:
    p = Progress({"pretrain": 1, "baseline": 2}, stream=io.StringIO())
    assert p.eta() is None
    p.started("pretrain", 1)
    p.finished("pretrain", 1, True, 5.0)
    assert p.eta() is None  # no baseline finished yet
    p.started("baseline", 1)
    p.finished("baseline", 1, True, 3.0)
    assert p.eta() == pytest.approx(3.0)


def test_off_a_terminal_plain_lines_when_counts_change() -> None:
    out = io.StringIO()
    p = _progress(stream=out)
    p.min_interval = 0.0
    with p:
        p.started("pretrain", 1, trial="a", config=_cfg("pretrain"))
        p.started("pretrain", 1, trial="a", config=_cfg("pretrain"))  # same counts? no: 2 run
        p.finished("pretrain", 1, True, 1.0, trial="a")
    p.show(final=True)
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue() and "━" not in out.getvalue()
    assert lines[-1].startswith("[") and "ETA " in lines[-1]
    assert "pretrain 1/2 done, 1 running" in lines[-1]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_live_view_then_the_final_state_once() -> None:
    out = _Tty()
    p = _progress(stream=out)
    p._console().width = 60  # type: ignore[misc]
    with p:
        p.started("pretrain", 1, trial="a", config=_cfg("pretrain"))
        p.finished("pretrain", 1, True, 1.0, trial="a")
    p.show(final=True)
    text = out.getvalue()
    final = text.rsplit("\x1b", 1)[-1]  # what follows the last control sequence
    assert "elapsed" in final or "elapsed" in text
    assert text.count("pretrain ") >= 1
    for line in text.splitlines():
        visible = line.split("\x1b[")[-1] if "\x1b[" in line else line
        assert len(visible) <= 60 + 8


def test_config_flops_prices_every_kind_of_the_smoke_sweep() -> None:
    from types import SimpleNamespace

    from ltsweep.engine.work_queue import work_items
    from ltsweep.planning.plan import make_plan
    from ltsweep.sweep.schema import load_sweep

    sweep = load_sweep("sweeps/smoke.yaml")
    plan = make_plan(sweep)
    todo_all = SimpleNamespace(
        pretrains_todo=plan.pretrains, finetunes_todo=plan.finetunes, baselines_todo=plan.baselines
    )
    ready, waiting = work_items(todo_all, sweep)  # every config priced when it is made
    configs = ready + [c for group in waiting.values() for c in group]
    assert {c["kind"] for c in configs} == {"pretrain", "finetune", "baseline"}
    assert all(SP.config_flops(c) > 0 for c in configs)
    todo = {"pretrain": 2, "finetune": len(plan.finetunes), "baseline": len(plan.baselines)}
    p = SP.for_run(todo, configs, {"CPU": 2.0}, io.StringIO())
    assert p.slots == {"pretrain": 2, "finetune": 2, "baseline": 2}
    eta = p.eta()
    assert eta is not None and 1 < eta < 3600
