"""The `ltsweep` command: run, plan, status, results, report, cancel.

Errors in what the user gave (sweep file, profile, data root, a corrupt cache file) are one
line on stderr and exit status 2, before anything is scheduled. `plan`, `status` and
`results` import neither torch nor ray, so they answer at once: the engines (ray, submitit)
and the report (matplotlib) are imported by the commands that use them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

import yaml

from ltsweep.planning.describe import describe_plan
from ltsweep.planning.plan import make_plan
from ltsweep.planning.state import assess
from ltsweep.store.cache import default_cache_dir, run_cache_dir
from ltsweep.store.results import pivot_text
from ltsweep.sweep.cluster_profile import load_profile
from ltsweep.sweep.schema import SpecError, Sweep, check_data_root, load_sweep, parse_sweep

EXIT_USAGE = 2


def _run_dir(sweep: Sweep, given: str | None) -> Path:
    return Path(given) if given else Path("runs") / sweep.name


def _cache_dir(run_dir: Path, given: str | None) -> Path:
    return Path(given) if given else default_cache_dir(run_dir)


def _load_run(run_dir: Path) -> tuple[Sweep, Path]:
    """The frozen sweep and the cache of an existing run folder."""
    frozen = run_dir / "sweep.yaml"
    if not frozen.is_file():
        raise SpecError(
            f"{run_dir}: not a run folder (no sweep.yaml; start it with `ltsweep run SWEEP`)"
        )
    return parse_sweep(yaml.safe_load(frozen.read_text()), str(frozen)), run_cache_dir(run_dir)


def cmd_plan(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep)
    check_data_root(sweep, args.sweep)
    run_dir = _run_dir(sweep, args.run_dir)
    print(describe_plan(sweep, run_dir, _cache_dir(run_dir, args.cache_dir)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep)
    if args.download:
        sweep = sweep.model_copy(update={"data": sweep.data.model_copy(update={"download": True})})
    check_data_root(sweep, args.sweep)
    run_dir = _run_dir(sweep, args.run_dir)
    cache_dir = _cache_dir(run_dir, args.cache_dir)
    if args.cluster:
        return _run_on_cluster(args, sweep, run_dir, cache_dir)
    from ltsweep.engine.ray_driver import run_sweep  # ray: only for `run`

    t0 = time.monotonic()
    summary = run_sweep(
        sweep, run_dir, cache_dir, address=args.address, show_progress=not args.quiet
    )
    if summary.get("interrupted"):
        print(
            f"\nltsweep: interrupted; everything stored in {run_dir} is kept; run the same command again "
            "to finish what is left",
            file=sys.stderr,
        )
        print(pivot_text(run_dir))
        return 130
    if summary.get("nothing_to_do"):
        print(
            f"ltsweep: nothing to do: all {summary['stored']} results of {sweep.name!r} are stored in {run_dir}",
            file=sys.stderr,
        )
    else:
        failed = summary["failed"]
        print(
            f"ltsweep: finished in {time.monotonic() - t0:.0f} s; {failed.get('trials', 0)} failed Tune trials, "
            f"logs in {run_dir / 'logs'}",
            file=sys.stderr,
        )
    print(pivot_text(run_dir))
    return 1 if summary.get("failed", {}).get("trials") else 0


def _run_on_cluster(args: argparse.Namespace, sweep: Sweep, run_dir: Path, cache_dir: Path) -> int:
    from ltsweep.engine import slurm  # submitit: only with a SLURM job

    profile = load_profile(args.cluster)
    command = ["ltsweep", "run", args.sweep, "--cluster", args.cluster, "--run-dir", str(run_dir)]
    if args.cache_dir:
        command += ["--cache-dir", args.cache_dir]
    try:
        job = slurm.submit_sweep(
            Path(args.sweep), run_dir, cache_dir, profile, command=shlex.join(command)
        )
    except slurm.JobActive as err:
        raise SpecError(str(err)) from None
    print(
        f"ltsweep: submitted SLURM job {job.job_id}; logs in {run_dir / 'logs' / 'slurm'}; "
        f"follow with `ltsweep status {run_dir}`"
    )
    if args.wait:
        job.wait()
        print(pivot_text(run_dir))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "results").is_dir():
        raise SpecError(f"{run_dir}: not a run folder (no results/)")
    print(pivot_text(run_dir))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    sweep, cache_dir = _load_run(run_dir)
    counts = assess(make_plan(sweep), run_dir, cache_dir, verify=False).counts()
    job = _slurm_job(run_dir)
    # the job's driver runs only while SLURM runs the job (its heartbeat outlives a kill -9)
    job_ended = job is not None and job["state"] not in ("RUNNING", "unknown")
    running = {} if job_ended else _driver_running(run_dir)
    print(f"sweep {sweep.name!r} in {run_dir}")
    print(f"{'stage':<10} {'done':>6} {'running':>8} {'failed':>7} {'to do':>7} {'total':>7}")
    for stage, c in counts.items():
        if not c["total"]:
            continue
        r = running.get(stage, 0)
        todo = max(0, c["todo"] - r - (c["failed"] if stage != "pretrain" else 0))
        print(f"{stage:<10} {c['done']:>6} {r:>8} {c['failed']:>7} {todo:>7} {c['total']:>7}")
    print("driver: not running" if job_ended else _driver_line(run_dir))
    if job is not None:
        print(_slurm_line(job))
    return 0


def _driver_info(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "driver.json").read_text())
    except (OSError, ValueError):
        return {}


def _driver_alive(info: dict) -> bool:
    if not info.get("running"):
        return False
    if info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError):
            return False
        return True
    return time.time() - float(info.get("time", 0)) < 600  # another host: trust a recent heartbeat


def _driver_running(run_dir: Path) -> dict[str, int]:
    info = _driver_info(run_dir)
    return dict(info.get("units_running", {})) if _driver_alive(info) else {}


def _driver_line(run_dir: Path) -> str:
    info = _driver_info(run_dir)
    if not info:
        return "driver: never started"
    if _driver_alive(info):
        return f"driver: running (pid {info['pid']} on {info['host']})"
    return "driver: not running"


def _slurm_job(run_dir: Path) -> dict | None:
    """The run's SLURM job as status shows it (record, live state, requeues), or None."""
    if not (run_dir / "slurm.json").is_file():
        return None
    from ltsweep.engine import slurm  # submitit: only with a SLURM job

    return {
        "record": slurm.read_record(run_dir) or {},
        "state": slurm.job_state(run_dir) or "unknown",
        "requeues": slurm.requeue_count(run_dir),
        "active_states": slurm.ACTIVE_STATES | {"unknown"},
    }


def _slurm_line(job: dict) -> str:
    """`SLURM job 12: RUNNING, requeued 2 time(s) (1 by ltsweep at its time limit)`, and for
    a job that ended without finishing, the command that finishes what is missing."""
    record, state, requeues = job["record"], job["state"], job["requeues"]
    line = f"SLURM job {record.get('job_id')}: {state}"
    if requeues:
        own = int(record.get("requeues", 0))
        line += f", requeued {requeues} time(s)" + (
            f" ({own} by ltsweep at its time limit)" if own else ""
        )
    if state not in job["active_states"] and state != "COMPLETED":
        again = record.get("command") or "ltsweep run SWEEP --cluster PROFILE --run-dir RUN"
        line += f"\nthe job ended {state}: `{again}` finishes what is missing"
    return line


def cmd_cancel(args: argparse.Namespace) -> int:
    from ltsweep.engine import slurm  # submitit: only with a SLURM job

    run_dir = Path(args.run_dir)
    if not (run_dir / "slurm.json").is_file():
        raise SpecError(f"{run_dir}: no SLURM job recorded (slurm.json missing)")
    job_id = slurm.cancel(run_dir)
    print(f"ltsweep: cancelled SLURM job {job_id}; stored results in {run_dir} are kept")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ltsweep.report.build import write_report  # matplotlib: only for `report`

    run_dir = Path(args.run_dir)
    _load_run(run_dir)
    index = write_report(run_dir, Path(args.out) if args.out else None)
    print(f"ltsweep: report written to {index}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ltsweep", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run a sweep (local Ray, or SLURM with --cluster); resumes what is stored"
    )
    run.add_argument("sweep", help="sweep file (YAML), e.g. sweeps/smoke.yaml")
    run.add_argument("--run-dir", help="run folder (default: runs/<sweep name>)")
    run.add_argument(
        "--cache-dir", help="pre-train/feature cache (default: $LTSWEEP_CACHE or runs/.cache)"
    )
    run.add_argument(
        "--cluster", help="cluster profile (YAML): submit to SLURM instead of running here"
    )
    run.add_argument(
        "--wait", action="store_true", help="with --cluster: follow the job to its end"
    )
    run.add_argument(
        "--address", help="connect to this running Ray cluster instead of starting one"
    )
    run.add_argument(
        "--download", action="store_true", help="fetch CIFAR if its data root is empty (opt-in)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress view")
    run.set_defaults(func=cmd_run)

    plan = sub.add_parser("plan", help="print what a sweep would run, and what is already stored")
    plan.add_argument("sweep")
    plan.add_argument("--run-dir")
    plan.add_argument("--cache-dir")
    plan.set_defaults(func=cmd_plan)

    for name, func, helptext in (
        ("status", cmd_status, "done / running / failed / to do per stage of a run folder"),
        (
            "results",
            cmd_results,
            "accuracy table of a run folder (rows: stage, method, gamma, loss; columns: noise)",
        ),
        ("cancel", cmd_cancel, "cancel the SLURM job of a run folder (stored results are kept)"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("run_dir")
        sp.set_defaults(func=func)
    rep = sub.add_parser("report", help="write RUN_DIR/report/ with the paper's figures and tables")
    rep.add_argument("run_dir")
    rep.add_argument("--out", help="output folder (default: RUN_DIR/report)")
    rep.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as err:
        print(f"ltsweep: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "\nltsweep: interrupted; everything stored is kept; run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
