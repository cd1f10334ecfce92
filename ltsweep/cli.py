"""The `ltsweep` command: run, plan, status, results, report, cancel, doctor.

Errors in what the user gave (sweep file, profile, data root, a corrupt cache file) are one
line on stderr and exit status 2, before anything is scheduled. `plan`, `status` and
`results` import neither torch nor ray, so they answer at once: the engines (ray, submitit)
and the report (matplotlib) are imported by the commands that use them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from ltsweep.engine.local_checks import check_address, check_cpus, check_gpu
from ltsweep.engine.slurm_record import read_workers
from ltsweep.planning.describe import describe_plan
from ltsweep.planning.gpu_budget import check_gpu_memory
from ltsweep.planning.preflight import (
    check_data,
    check_label_values,
    check_precision,
    check_run_folder,
    check_writable,
)
from ltsweep.status import check_record, job_only_text, status_text
from ltsweep.store.cache import default_cache_dir, run_cache_dir
from ltsweep.store.lock import describe as describe_lock
from ltsweep.store.lock import read_lock, stale_reason
from ltsweep.store.results_view import FORMATS, METRICS, ViewError, results_text
from ltsweep.sweep.base import one_line, read_yaml
from ltsweep.sweep.cluster_profile import load_profile
from ltsweep.sweep.schema import SpecError, Sweep, check_label_file, load_sweep, parse_sweep
from ltsweep.version import __version__

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
    sweep = parse_sweep(read_yaml(frozen, "sweep file"), str(frozen))
    try:
        cache_dir = run_cache_dir(run_dir)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SpecError(
            f"{run_dir / 'run.json'}: missing or unreadable ({type(err).__name__}); "
            "`ltsweep run` with the same sweep and --run-dir writes it again"
        ) from None
    return sweep, cache_dir


def _preflight(args: argparse.Namespace, sweep: Sweep, run_dir: Path, cache_dir: Path) -> None:
    """Everything `run` can check before it writes anything (one line, exit 2, if not)."""
    check_precision(sweep, args.sweep)
    check_data(sweep, args.sweep)
    check_run_folder(sweep, run_dir, args.sweep)
    check_writable(run_dir, "run folder")
    check_writable(cache_dir, "cache folder (--cache-dir or LTSWEEP_CACHE)")
    holder = read_lock(run_dir)
    # a SLURM job's driver: submit_sweep says which job is still active, and how to follow it
    by_job = bool(args.cluster and holder and holder.get("slurm_job_id"))
    if holder is not None and not by_job and stale_reason(holder) is None:
        raise SpecError(
            f"{run_dir}: another ltsweep driver runs this folder ({describe_lock(holder)}); "
            "wait for it, or stop it, then run again"
        )
    if args.cluster:
        return
    if args.address:
        check_address(args.address)
    else:
        check_cpus(sweep, args.sweep)
        check_gpu(sweep, args.sweep)
    note = check_gpu_memory(sweep, args.sweep)  # with --cluster, the job's driver checks
    if note:
        print(f"ltsweep: note: {note}", file=sys.stderr)


def cmd_plan(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep)
    check_precision(sweep, args.sweep)
    labels = sweep.data.noisy_labels
    if labels is not None:  # their checksum is part of the keys: a plan needs them, valid
        check_label_file(labels, f"{args.sweep}: ")
        check_label_values(
            labels.resolved_path(), labels.key, sweep.data.dataset, f"{args.sweep}: "
        )
    try:  # but no data on disk (e.g. a cluster's grid planned on a laptop)
        check_data(sweep, args.sweep)
        note = ""
    except SpecError as err:
        note = f"{err}; `ltsweep run` needs it, `plan` does not"
    run_dir = _run_dir(sweep, args.run_dir)
    print(describe_plan(sweep, run_dir, _cache_dir(run_dir, args.cache_dir), note))
    return 0


def interrupted_message(run_dir: Path | None) -> str:
    """What an interrupted command says, whether SIGINT or SIGTERM stopped it."""
    where = f" in {run_dir}" if run_dir is not None else ""
    return (
        f"ltsweep: interrupted; everything stored{where} is kept; "
        "run the same command again to finish what is left"
    )


def cmd_run(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep)
    if args.download:
        sweep = sweep.model_copy(update={"data": sweep.data.model_copy(update={"download": True})})
    run_dir = _run_dir(sweep, args.run_dir)
    args.resolved_run_dir = run_dir  # for the interruption message
    cache_dir = _cache_dir(run_dir, args.cache_dir)
    if args.cluster:
        load_profile(args.cluster)  # a bad profile is refused before anything is written
    if args.nodes is not None and (not args.cluster or args.nodes < 1):
        raise SpecError(f"--nodes: {args.nodes} (a number of nodes >= 1, with --cluster)")
    _preflight(args, sweep, run_dir, cache_dir)
    if args.cluster:
        return _run_on_cluster(args, sweep, run_dir, cache_dir)
    from ltsweep.engine.ray_driver import run_sweep  # ray: only for `run`

    t0 = time.monotonic()
    summary = run_sweep(
        sweep, run_dir, cache_dir, address=args.address, show_progress=not args.quiet
    )
    if summary.get("interrupted"):
        print(f"\n{interrupted_message(run_dir)}", file=sys.stderr)
        print(results_text(run_dir))
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
    print(results_text(run_dir))
    return 1 if summary.get("failed", {}).get("trials") else 0


def _submit_failed(err: Exception) -> int:
    """One line for a submission SLURM refused or could not take (sbatch's last line)."""
    first = one_line(str(err).strip().splitlines()[-1] if str(err).strip() else "", 300)
    print(
        f"ltsweep: error: cannot submit to SLURM ({type(err).__name__}: {first}); "
        "is SLURM reachable from here (`sinfo`)?",
        file=sys.stderr,
    )
    return 1


def _run_on_cluster(args: argparse.Namespace, sweep: Sweep, run_dir: Path, cache_dir: Path) -> int:
    from ltsweep.engine import slurm  # submitit: only with a SLURM job

    profile = load_profile(args.cluster)
    command = ["ltsweep", "run", args.sweep, "--cluster", args.cluster, "--run-dir", str(run_dir)]
    if args.nodes is not None:  # fewer (or more) nodes than the profile's: what is up now
        profile = profile.model_copy(update={"nodes": args.nodes})
        command += ["--nodes", str(args.nodes)]
    if args.cache_dir:
        command += ["--cache-dir", args.cache_dir]
    try:
        job = slurm.submit_sweep(
            Path(args.sweep),
            run_dir,
            cache_dir,
            profile,
            command=shlex.join(command),
            warn=lambda line: print(f"ltsweep: {line}", file=sys.stderr),
        )
    except slurm.JobActive as err:
        raise SpecError(str(err)) from None
    except SpecError:
        raise
    except Exception as err:  # noqa: BLE001 - sbatch missing, controller down, refused job
        return _submit_failed(err)
    workers = [w for w in read_workers(run_dir) if w.get("for_job") == str(job.job_id)]
    joined = "".join(f" and {w['tasks']} worker job(s) (array {w['job_id']})" for w in workers)
    print(
        f"ltsweep: submitted SLURM job {job.job_id}{joined}; logs in "
        f"{run_dir / 'logs' / 'slurm'}; follow with `ltsweep status {run_dir}`"
    )
    if args.wait:
        job.wait()  # the driver's result is written; SLURM may still be ending the job:
        deadline = time.monotonic() + 120  # follow it until SLURM says it ended, as status will
        while slurm.job_state(run_dir) in slurm.ACTIVE_STATES and time.monotonic() < deadline:
            time.sleep(1.0)
        unseen = slurm.unseen_run_folder(run_dir)  # rather than "not a run folder"
        if unseen:
            print(f"ltsweep: error: {unseen}", file=sys.stderr)
            return 1
        from ltsweep.engine.node_check import failed_node

        node = failed_node(run_dir / "logs" / "slurm" / str(job.job_id))
        if node:  # a node's check failed the job at once: its line says why
            print(f"ltsweep: error: {node}", file=sys.stderr)
            return 1
        print(results_text(run_dir))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "results").is_dir():
        raise SpecError(f"{run_dir}: not a run folder (no results/)")
    try:
        print(results_text(run_dir, args.metric, args.where, args.format))
    except ViewError as err:
        raise SpecError(str(err)) from None
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "sweep.yaml").is_file() and (text := job_only_text(run_dir)):
        print(text)  # a job still waiting for its first start
        return 0
    sweep, cache_dir = _load_run(run_dir)
    print(status_text(run_dir, sweep, cache_dir))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from ltsweep.engine import slurm  # submitit: only with a SLURM job

    run_dir = Path(args.run_dir)
    if not (run_dir / "slurm.json").is_file():
        raise SpecError(f"{run_dir}: no SLURM job recorded (slurm.json missing)")
    check_record(run_dir, slurm.read_record(run_dir))
    try:
        job_id = slurm.cancel(run_dir)
    except (OSError, subprocess.SubprocessError) as err:
        print(f"ltsweep: error: scancel failed: {one_line(str(err), 300)}", file=sys.stderr)
        return 1
    workers = " and its worker jobs" if read_workers(run_dir) else ""
    print(f"ltsweep: cancelled SLURM job {job_id}{workers}; stored results in {run_dir} are kept")
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    from ltsweep.engine import slurm  # submitit: only with a SLURM job

    run_dir = Path(args.run_dir)
    if not (run_dir / "slurm.json").is_file():
        raise SpecError(
            f"{run_dir}: no SLURM job recorded (slurm.json missing): submit the sweep first"
        )
    check_record(run_dir, slurm.read_record(run_dir))
    try:
        array_id = slurm.submit_workers(run_dir, args.jobs)
    except SpecError:
        raise
    except Exception as err:  # noqa: BLE001 - controller down, refused job
        return _submit_failed(err)
    print(
        f"ltsweep: submitted {args.jobs} worker job(s) as SLURM array {array_id}; they join the "
        f"sweep's Ray cluster and leave when it has no work; follow with `ltsweep status {run_dir}`"
    )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ltsweep.engine.node_check import doctor  # torch: only for `doctor`

    run_dir = Path(args.run_dir) if args.run_dir else None
    cache_dir = Path(args.cache_dir) if args.cache_dir else None
    if cache_dir is None and (run_dir is not None or os.environ.get("LTSWEEP_CACHE")):
        cache_dir = default_cache_dir(run_dir or Path("runs") / "x")
    return doctor(run_dir, cache_dir)


def cmd_report(args: argparse.Namespace) -> int:
    from ltsweep.report.build import write_report  # matplotlib: only for `report`

    runs = [Path(r) for r in args.run_dir]
    for run_dir in runs:
        _load_run(run_dir)
    if len(runs) > 1 and not args.out:
        raise SpecError("report of several runs: give the output folder with --out DIR")
    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("png", "pdf", "svg")]
    if bad or not formats:
        raise SpecError(f"--format: {','.join(bad) or args.format!r} (use png, pdf, svg)")
    if not args.dpi > 0:
        raise SpecError(f"--dpi: {args.dpi:g} is not > 0")
    out = Path(args.out) if args.out else None
    index = write_report(runs, out, formats=formats, dpi=args.dpi)
    print(f"ltsweep: report written to {index}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ltsweep", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"ltsweep {__version__}")
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
        "--nodes",
        type=int,
        help="with --cluster: nodes of the job instead of the profile's (e.g. those still up)",
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
    plan.add_argument("sweep", help="sweep file (YAML), e.g. sweeps/cifar100.yaml")
    plan.add_argument("--run-dir", help="run folder to compare with (default: runs/<sweep name>)")
    plan.add_argument(
        "--cache-dir", help="pre-train/feature cache (default: $LTSWEEP_CACHE or runs/.cache)"
    )
    plan.set_defaults(func=cmd_plan)

    for name, func, helptext in (
        ("status", cmd_status, "done / running / failed / to do per stage of a run folder"),
        ("cancel", cmd_cancel, "cancel the SLURM job of a run folder (stored results are kept)"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("run_dir", help="a run folder, e.g. runs/smoke")
        sp.set_defaults(func=func)
    wk = sub.add_parser(
        "workers",
        help="add one-node SLURM worker jobs to a running sweep: they join its Ray cluster, take "
        "units, and leave when there is no work",
    )
    wk.add_argument("run_dir", help="the run folder of a sweep submitted with --cluster")
    wk.add_argument("--jobs", type=int, required=True, help="how many worker jobs (nodes)")
    wk.set_defaults(func=cmd_workers)
    res = sub.add_parser(
        "results",
        help="a metric's table of a run folder (rows: stage, method, gamma, loss; columns: "
        "noise; cells: mean +/- std (seeds))",
    )
    res.add_argument("run_dir", help="a run folder, e.g. runs/smoke")
    res.add_argument("--metric", default="acc", choices=list(METRICS), help="what to show")
    res.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="keep only these rows (repeatable), e.g. --where method=simsiam --where gamma=10",
    )
    res.add_argument("--format", default="table", choices=FORMATS, help="output format")
    res.set_defaults(func=cmd_results)
    rep = sub.add_parser(
        "report",
        help="write RUN_DIR/report/ with the paper's figures and tables (several runs: combined)",
    )
    rep.add_argument("run_dir", nargs="+", help="run folder(s); several make one combined report")
    rep.add_argument(
        "--out", help="output folder (default: RUN_DIR/report; required for several runs)"
    )
    rep.add_argument(
        "--format", default="png", help="figure files, comma-separated: png,pdf,svg (default png)"
    )
    rep.add_argument("--dpi", type=float, default=100, help="resolution of PNGs (default 100)")
    rep.set_defaults(func=cmd_report)
    doc = sub.add_parser(
        "doctor",
        help="check this machine for a sweep: torch build, driver, GPUs, precision, a training "
        "step, CPUs, memory, folders (exit 1 on a failure)",
    )
    doc.add_argument("--run-dir", help="a run folder to check is writable (made later if missing)")
    doc.add_argument(
        "--cache-dir", help="a cache to check is writable (default: $LTSWEEP_CACHE if set)"
    )
    doc.set_defaults(func=cmd_doctor)
    return p


def _on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: what is stored stays


def _trace_file(args: argparse.Namespace | None) -> Path | None:
    """Where the full trace of an unexpected error goes: the run's logs/, else
    ~/.cache/ltsweep/, else a temporary file."""
    text = traceback.format_exc()
    name = f"crash-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.txt"
    places = []
    run_dir = getattr(args, "run_dir", None)
    if run_dir and (Path(run_dir) / "logs").is_dir():
        places.append(Path(run_dir) / "logs")
    places.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ltsweep")
    places.append(Path(tempfile.gettempdir()))
    for folder in places:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    return None


def main(argv: list[str] | None = None) -> int:
    """The `ltsweep` command. Bad input: one line, exit 2; Ctrl-C / SIGTERM: exit 130; any
    other error: one line naming where its trace was written, exit 1 (LTSWEEP_DEBUG=1 shows
    the trace instead)."""
    debug = os.environ.get("LTSWEEP_DEBUG", "") not in ("", "0")
    args = None
    try:
        import signal

        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        pass
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except SpecError as err:
        print(f"ltsweep: error: {one_line(str(err), 2000)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{interrupted_message(getattr(args, 'resolved_run_dir', None))}", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except BrokenPipeError:  # `ltsweep results RUN | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as err:
        if debug:
            raise
        where = _trace_file(args)
        command = getattr(args, "command", None) or "ltsweep"
        print(
            f"ltsweep: {command} failed: {type(err).__name__}: {one_line(str(err), 300)} "
            f"(full trace in {where or 'nowhere: no writable folder'}; LTSWEEP_DEBUG=1 shows it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
