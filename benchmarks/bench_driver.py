#!/usr/bin/env python
"""The sweep driver at scale: 10,000 trivial fine-tune trials planned, scheduled, stored.

Why this exists: with stacking, the cost of a fine-tune trial can be a few milliseconds, so
what limits a large sweep is the driver: building the plan (a content key per unit),
assessing what is stored (reading the result files back), handing groups to Ray Tune, and
writing the rows. This script builds a sweep in code with one tiny pre-train and a grid of
many noise levels x 4 losses x many seeds (10,000 fine-tunes by default; digits at 8x8, a
width-2 ResNet18, 1 pre-train epoch, 1 fine-tune epoch), runs it with `run_sweep` on a local
Ray, then runs the finished sweep again, which must find nothing to do.

Reported: planning (make_plan + assess) on the empty run folder, the whole run, seconds per
1,000 trials, the driver process's peak RSS (ru_maxrss; Ray's worker processes are not in
it) and tracemalloc peaks of the planning and the re-run, the re-run's time, and with
`--profile` the cProfile top 15 of the planning, of the re-run and (slower) of the run.

The driver imports no torch here, as `ltsweep run` does not: the driver's memory is then
the driver's own. Timings only: nothing here asserts a speed. Results go to stdout and to
this script's section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import platform
import pstats
import resource
import shlex
import shutil
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


def build_sweep(trials: int, noise_levels: int, image_size: int, width: int, group: int) -> Any:
    """One tiny pre-train and `trials` fine-tunes (rounded up to a whole grid)."""
    from ltsweep.sweep.schema import parse_sweep

    seeds = -(-trials // (noise_levels * len(LOSSES)))
    return parse_sweep(
        {
            "name": "bench-driver",
            "data": {"dataset": "digits", "image_size": image_size, "test_per_class": 10},
            "backbone": {"width": width},
            "grid": {
                "ssl": ["simsiam"],
                "gamma": [1],
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
    ap.add_argument("--trials", type=int, default=10_000, help="fine-tune trials (rounded up)")
    ap.add_argument("--noise-levels", type=int, default=50)
    ap.add_argument("--image-size", type=int, default=8, help="digits image size (>= 8)")
    ap.add_argument("--width", type=int, default=2, help="ResNet18 width")
    ap.add_argument("--group", type=int, default=512, help="execution.max_group_size")
    ap.add_argument("--workdir", help="where the run folder and cache go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--profile", action="store_true", help="cProfile planning, run and re-run")
    ap.add_argument("--no-fragment", action="store_true", help="do not update the results file")
    args = ap.parse_args(argv)

    load_start = os.getloadavg()
    rss_start = maxrss_mib()
    t_import, _ = timed(lambda: __import__("ltsweep.engine.ray_driver"))
    from ltsweep.engine.ray_driver import prepare_run, run_sweep
    from ltsweep.planning.plan import make_plan
    from ltsweep.planning.state import assess
    from ltsweep.store.results import read_table, stored_keys

    sweep = build_sweep(args.trials, args.noise_levels, args.image_size, args.width, args.group)
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
    body = "\n\n".join(
        [
            "## Sweep driver at scale: 10,000 trivial fine-tunes",
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
