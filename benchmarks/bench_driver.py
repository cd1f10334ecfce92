#!/usr/bin/env python
"""The sweep driver at scale: 10,000 and 100,000 trivial fine-tune trials planned, scheduled,
stored, side by side.

Why this exists: with stacking, the cost of a fine-tune trial can be a few milliseconds, so
what limits a large sweep is the driver: building the plan (a content key per unit),
assessing what is stored (reading the result files back), handing groups to Ray Tune, and
writing the rows. This script builds a sweep in code with one tiny pre-train and a grid of
many noise levels x 4 losses x many seeds (10,000 and 100,000 fine-tunes by default, each
scale in a process of its own; digits at 8x8, a width-2 ResNet18, 1 pre-train epoch, 1
fine-tune epoch), runs it with `run_sweep` on a local Ray, then runs the finished sweep
again, which must find nothing to do; and it plans (not runs) a grid of 1,000 pre-trains.

Reported: planning (make_plan + assess) on the empty run folder, the whole run, seconds per
1,000 trials, the driver process's peak RSS (ru_maxrss; Ray's worker processes are not in
it) and tracemalloc peaks of the planning and the re-run, the re-run's time, and with
`--profile` the cProfile top 15 of the planning, of the re-run and (slower) of the run.

The driver's RSS includes torch: Tune's TensorBoard writer (tensorboardX, used whenever it
is installed, `engine/tune_callbacks.py`) imports it into the driver, about 500 MiB. Timings only: nothing here asserts a speed. Results go to stdout and to
this script's section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from results_md import publish, timed

SECTION = "bench_driver"
LOSSES = ["ce", "ce+sl", "la", "la+sl"]


def build_sweep(
    trials: int, noise_levels: int, image_size: int, width: int, group: int, pretrains: int = 1
) -> Any:
    """`pretrains` tiny pre-trains (one per imbalance ratio 1, 1.1, 1.2, ...) and `trials`
    fine-tunes in all (rounded up to a whole grid)."""
    from ltsweep.sweep.schema import parse_sweep

    seeds = -(-trials // (noise_levels * len(LOSSES) * pretrains))
    return parse_sweep(
        {
            "name": "bench-driver",
            "data": {"dataset": "digits", "image_size": image_size, "test_per_class": 10},
            "backbone": {"width": width},
            "grid": {
                "ssl": ["simsiam"],
                "gamma": [round(1 + i / 10, 1) for i in range(pretrains)],
                "noise": [round(i / noise_levels, 6) for i in range(noise_levels)],
                "losses": LOSSES,
                "head": ["auto"],
                "seeds": list(range(seeds)),
            },
            "ssl": {
                "simsiam": {
                    "epochs": 1,
                    "batch_size": 64,
                    "warmup_epochs": 0,
                    "checkpoint_every": 1,
                    "knn_every": 1,
                    "knn_k": 5,
                    "proj_hidden": 16,
                    "proj_dim": 16,
                    "pred_hidden": 8,
                    "finetune": {"epochs": 1, "batch_size": 512},
                }
            },
            "resources": {"pretrain": {"cpu": 1, "gpu": 0}, "finetune": {"cpu": 1, "gpu": 0}},
            "execution": {"device": "cpu", "max_group_size": group},
        },
        "<bench_driver>",
    )


def traced(fn: Callable[[], Any]) -> tuple[float, int, Any]:
    """(seconds, tracemalloc peak bytes, result) of fn: Python allocations of the driver."""
    tracemalloc.start()
    try:
        seconds, out = timed(fn)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return seconds, peak, out


def profiled(fn: Callable[[], Any], top: int = 15, focus: str = "") -> tuple[Any, str]:
    """Run fn under cProfile; return its result and the top entries by cumulative time.

    With `focus` (a regular expression of file/function names), the top entries matching
    it follow: in a Ray run the cumulative top is all Tune wrappers and ray.wait.
    """
    prof = cProfile.Profile()
    out = prof.runcall(fn)
    texts = []
    for restriction in ([top], [focus, top]) if focus else ([top],):
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("cumulative")
        stats.print_stats(*restriction)
        text = buf.getvalue()
        texts.append(text[text.find("   ncalls") :].rstrip() if "   ncalls" in text else text)
    if focus:
        texts[1] = f"-- entries matching {focus!r}:\n{texts[1]}"
    return out, "\n".join(texts)


def maxrss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--trials",
        default="10000,100000",
        help="fine-tune trials (rounded up); several, comma-separated, are run one after the "
        "other, each in a process of its own (its own peak memory), and shown side by side",
    )
    ap.add_argument(
        "--plan-pretrains",
        type=int,
        default=1000,
        help="also plan (make_plan + assess, not run) a grid of this many pre-trains (0: not)",
    )
    ap.add_argument("--json", help=argparse.SUPPRESS)  # one scale's figures, for the parent
    ap.add_argument("--noise-levels", type=int, default=50)
    ap.add_argument("--image-size", type=int, default=8, help="digits image size (>= 8)")
    ap.add_argument("--width", type=int, default=2, help="ResNet18 width")
    ap.add_argument("--group", type=int, default=512, help="execution.max_group_size")
    ap.add_argument("--workdir", help="where the run folder and cache go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--profile", action="store_true", help="cProfile planning, run and re-run")
    ap.add_argument("--no-fragment", action="store_true", help="do not update the results file")
    args = ap.parse_args(argv)
    try:
        scales = [int(t.replace("_", "")) for t in str(args.trials).split(",") if t.strip()]
    except ValueError:
        ap.error(f"--trials: {args.trials!r} is not a comma-separated list of counts")
    if not scales or min(scales) < 1:
        ap.error("--trials: give at least one count >= 1")
    if len(scales) > 1 or args.plan_pretrains:
        side_by_side(args, scales)
        return
    one_scale(args, scales[0])


def side_by_side(args: argparse.Namespace, scales: list[int]) -> None:
    """Each scale in a process of its own (its own peak RSS), then the figures side by side,
    and the planning of a grid of `--plan-pretrains` pre-trains; one section of RESULTS.md."""
    load_start = os.getloadavg()
    passed = [
        *("--noise-levels", str(args.noise_levels), "--image-size", str(args.image_size)),
        *("--width", str(args.width), "--group", str(args.group), "--plan-pretrains", "0"),
        "--no-fragment",
        *(["--profile"] if args.profile else []),
    ]
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-driver-") as tmp:
        for trials in scales:
            out = Path(tmp) / f"{trials}.json"
            child = [sys.executable, __file__, "--trials", str(trials), "--json", str(out)]
            if args.workdir:
                child += ["--workdir", str(Path(args.workdir) / str(trials))]
            print(f"--- {trials} trials", flush=True)
            subprocess.run([*child, *passed], check=True)
            figures.append(json.loads(out.read_text()))
    planned = plan_many_pretrains(args) if args.plan_pretrains else None
    load_end = os.getloadavg()

    head = [
        "| fine-tune trials | Tune trials | whole run (s) | ms per trial | driver peak RSS "
        "(MiB) | make_plan (s) | re-run of the finished sweep (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        head.append(
            f"| {f['trials']:,} | {f['tune_trials']} | {f['run_s']:.1f} | "
            f"{f['ms_per_trial']:.2f} | {f['rss_mib'][2]:.0f} | {f['plan_s']:.2f} | "
            f"{f['rerun_s']:.2f} |"
        )
    loads = [f"{'/'.join(f'{x:.2f}' for x in pair)}" for pair in (load_start, load_end)]
    parts = [
        "## Sweep driver at scale: "
        + " and ".join(f"{n:,}" for n in scales)
        + " trivial fine-tunes",
        f"Command: `{shlex.join(['python', *sys.argv])}`  \n"
        f"Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}; "
        f"torch {metadata.version('torch')}, ray {metadata.version('ray')}, "
        f"Python {platform.python_version()}; os.cpu_count() = {os.cpu_count()}  \n"
        f"Load average (1/5/15 min; the machine is shared, other jobs ran too): start "
        f"{loads[0]}, end {loads[1]}",
        f"Sweep built in code: digits {args.image_size}x{args.image_size}, resnet18 width "
        f"{args.width}, one simsiam pre-train of 1 epoch, grid {args.noise_levels} noise levels x "
        f"4 losses x N seeds of 1-epoch fine-tunes (head auto), max_group_size {args.group}; "
        "Ray started by `run_sweep` (num_cpus = os.cpu_count()); progress view off. Each scale "
        "runs in a process of its own; `ms per trial` is the whole run (Ray start, the "
        "pre-train, every fine-tune, rows written) over the fine-tunes; RSS is the driver's "
        "(ru_maxrss; Ray's workers are not in it; about 500 MiB of it is torch, which Tune's "
        "TensorBoard writer imports); make_plan and the re-run are timed under tracemalloc, "
        "which slows them several times over (make_plan of 100,000 units alone: about 2 s).",
        "\n".join(head),
    ]
    if planned is not None:
        parts.append(planned)
    for f in figures:
        parts.append(
            f"<details><summary>{f['trials']:,} fine-tunes, step by step</summary>\n\n"
            f"Load average at its start / end: {'/'.join(f'{x:.2f}' for x in f['load'][0])} / "
            f"{'/'.join(f'{x:.2f}' for x in f['load'][1])}; todo at the start: {f['todo']}\n\n"
            f"{f['table']}\n</details>"
        )
        parts += [
            f"<details><summary>cProfile top 15, {f['trials']:,}: {k}</summary>\n\n```\n{v}"
            "\n```\n</details>"
            for k, v in f["profiles"].items()
        ]
    publish(SECTION, "\n\n".join(parts), write=not args.no_fragment)


def plan_many_pretrains(args: argparse.Namespace) -> str:
    """make_plan + assess (on an empty run folder) of a grid of `--plan-pretrains` pre-trains
    with 100 fine-tunes each: what the driver pays before it schedules anything. Not run: each
    pre-train is a Tune trial of real training, far more than this machine's two shared cores
    give a benchmark."""
    from ltsweep.planning.plan import make_plan
    from ltsweep.planning.state import assess

    pretrains = args.plan_pretrains
    sweep = build_sweep(100 * pretrains, 25, args.image_size, args.width, args.group, pretrains)
    t_plan, plan_peak, plan = traced(lambda: make_plan(sweep))
    with tempfile.TemporaryDirectory(prefix="bench-driver-plan-") as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        t_assess, assess_peak, _ = traced(lambda: assess(plan, run_dir, Path(tmp) / ".cache"))
    return (
        f"Planning only, {len(plan.pretrains):,} pre-trains (imbalance ratios 1 to "
        f"{1 + (pretrains - 1) / 10:g}) x 25 noise levels x 4 losses = "
        f"{len(plan.finetunes):,} fine-tunes: make_plan {t_plan:.2f} s (tracemalloc peak "
        f"{plan_peak / 2**20:.1f} MiB), assess on an empty run folder {t_assess:.2f} s "
        f"(peak {assess_peak / 2**20:.1f} MiB). Planned, not run."
    )


def one_scale(args: argparse.Namespace, trials: int) -> None:
    """One sweep of `trials` fine-tunes: planned, run, run again; its table published (or,
    for `side_by_side`, written as JSON)."""
    load_start = os.getloadavg()
    rss_start = maxrss_mib()
    t_import, _ = timed(lambda: __import__("ltsweep.engine.ray_driver"))
    from ltsweep.engine.ray_driver import prepare_run, run_sweep
    from ltsweep.planning.plan import make_plan
    from ltsweep.planning.state import assess
    from ltsweep.store.results import read_table, stored_keys

    sweep = build_sweep(trials, args.noise_levels, args.image_size, args.width, args.group)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-driver-"))
    run_dir, cache_dir = work / "run", work / ".cache"
    if run_dir.exists() or cache_dir.exists():
        raise SystemExit(f"{work}: run/ or .cache/ exists; give an empty --workdir")
    profiles: dict[str, str] = {}
    t_profiled = float("nan")
    try:
        # planning on the empty run folder: what `ltsweep plan` / the start of a run pays
        t_plan, plan_peak, plan = traced(lambda: make_plan(sweep))
        run_dir.mkdir(parents=True)
        t_assess, assess_peak, a = traced(lambda: assess(plan, run_dir, cache_dir))
        n = len(plan.finetunes)
        print(
            f"{n} fine-tunes, {len(plan.pretrains)} pre-train: plan {t_plan:.2f} s, assess {t_assess:.2f} s"
        )
        if args.profile:
            _, profiles["planning on the empty run folder (make_plan + assess)"] = profiled(
                lambda: assess(make_plan(sweep), run_dir, cache_dir)
            )
        rss_before = maxrss_mib()

        t_run, summary = timed(lambda: run_sweep(sweep, run_dir, cache_dir, show_progress=False))
        rss_after = maxrss_mib()
        ok = len(stored_keys(run_dir / "results", "ok") & {u.key for u in plan.finetunes})
        # each row's `seconds` is its group's time in run_finetunes / group size
        worker_s = sum(read_table(run_dir / "results").column("seconds").to_pylist())
        files = len(list((run_dir / "results").glob("*.parquet")))
        print(f"run: {t_run:.1f} s, {ok} of {n} stored in {files} files, summary {summary}")

        t_rerun, rerun_peak, resummary = traced(
            lambda: run_sweep(sweep, run_dir, cache_dir, show_progress=False)
        )
        print(f"re-run: {t_rerun:.2f} s, summary {resummary}")
        t_replan, _, plan2 = traced(lambda: make_plan(sweep))
        t_reassess, reassess_peak, a2 = traced(lambda: assess(plan2, run_dir, cache_dir))
        t_prep, _, _ = traced(lambda: prepare_run(sweep, run_dir, cache_dir))
        if args.profile:
            _, profiles["the re-run (finished sweep)"] = profiled(
                lambda: run_sweep(sweep, run_dir, cache_dir, show_progress=False)
            )
            # the run again in a fresh folder and cache: cProfile slows it, so the timed run
            # above is not the profiled one
            again = work / "profiled"
            t0 = time.perf_counter()
            _, profiles["a second, profiled run (driver's main thread)"] = profiled(
                lambda: run_sweep(sweep, again / "run", again / ".cache", show_progress=False),
                focus="experiment_state|searcher|ray_driver|atomic",
            )
            t_profiled = time.perf_counter() - t0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    load_end = os.getloadavg()
    rows = [
        ["import the driver (ltsweep.engine.ray_driver, ray)", f"{t_import:.2f}", ""],
        [
            f"make_plan ({n} fine-tunes + {len(plan.pretrains)} pre-train)",
            f"{t_plan:.2f}",
            f"tracemalloc peak {plan_peak / 2**20:.1f} MiB",
        ],
        [
            "assess, empty run folder",
            f"{t_assess:.3f}",
            f"tracemalloc peak {assess_peak / 2**20:.1f} MiB",
        ],
        [
            f"whole run (`run_sweep`: Ray start, 1 pre-train, {files} fine-tune Tune trials, rows written)",
            f"{t_run:.1f}",
            f"{t_run / n * 1000:.1f} s per 1,000 trials; {ok} of {n} rows ok; time inside "
            f"run_finetunes summed over groups {worker_s:.1f} s ({worker_s / n * 1000:.2f} s per "
            "1,000, on 2 workers)",
        ],
        [
            "re-run of the finished sweep (`run_sweep`)",
            f"{t_rerun:.2f}",
            f"nothing_to_do={resummary.get('nothing_to_do', False)}, stored={resummary.get('stored')}, "
            f"todo={resummary.get('todo')}; tracemalloc peak {rerun_peak / 2**20:.1f} MiB",
        ],
        [
            "  of which make_plan / assess (finished) / prepare_run (plan + assess + writes)",
            f"{t_replan:.2f} / {t_reassess:.2f} / {t_prep:.2f}",
            f"assess tracemalloc peak {reassess_peak / 2**20:.1f} MiB; {len(a2.done)} keys read back",
        ],
        ["the same run under cProfile (`--profile`, fresh folder)", f"{t_profiled:.1f}", ""],
        [
            "driver peak RSS (ru_maxrss): at start / before the run / after the run",
            "",
            f"{rss_start:.0f} / {rss_before:.0f} / {rss_after:.0f} MiB",
        ],
    ]
    lines = ["| step | seconds | notes |", "|---|---|---|"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]
    if args.json:
        figures = {
            "trials": n,
            "tune_trials": files,
            "run_s": t_run,
            "ms_per_trial": t_run / n * 1000,
            "rows_ok": ok,
            "plan_s": t_plan,
            "rerun_s": t_rerun,
            "rss_mib": [rss_start, rss_before, rss_after],
            "load": [load_start, os.getloadavg()],
            "todo": a.counts()["finetune"],
            "seeds": len(sweep.grid.seeds),
            "table": "\n".join(lines),
            "profiles": profiles,
        }
        Path(args.json).write_text(json.dumps(figures))
        return
    body = "\n\n".join(
        [
            f"## Sweep driver at scale: {n:,} trivial fine-tunes",
            f"Command: `{shlex.join(['python', *sys.argv])}`  \n"
            f"Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}; "
            f"torch {metadata.version('torch')}, ray {metadata.version('ray')}, "
            f"Python {platform.python_version()}; os.cpu_count() = {os.cpu_count()}  \n"
            f"Load average (1/5/15 min): start {'/'.join(f'{x:.2f}' for x in load_start)}, "
            f"end {'/'.join(f'{x:.2f}' for x in load_end)}",
            f"Sweep built in code: digits {args.image_size}x{args.image_size}, resnet18 width "
            f"{args.width}, simsiam 1 epoch, grid {args.noise_levels} noise levels x 4 losses x "
            f"{len(sweep.grid.seeds)} seeds = {n} fine-tunes of 1 epoch (head auto: full / last "
            f"above noise 0.6), max_group_size {args.group}; Ray started by `run_sweep` "
            f"(num_cpus = os.cpu_count()); progress view off. Todo at the start: {a.counts()['finetune']}.",
            "\n".join(lines),
        ]
        + [
            f"<details><summary>cProfile top 15, {k}</summary>\n\n```\n{v}\n```\n</details>"
            for k, v in profiles.items()
        ]
    )
    publish(SECTION, body, write=not args.no_fragment)


if __name__ == "__main__":
    main()
