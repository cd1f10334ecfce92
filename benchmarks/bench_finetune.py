#!/usr/bin/env python
"""Stacked fine-tuning against one trial at a time, on the CPU.

Why this exists: ltsweep trains all fine-tune trials of one pre-train as ONE stacked model
(`ltsweep.train.finetune.train_stacked`) instead of scheduling each trial as its own Ray Tune
trial. This script measures what that buys, on features shaped like the paper's CIFAR-10
setting: 120 trials of one pre-train (10 noise levels x 4 losses x 3 seeds), 12,406
training samples of 512-d class-structured random features with the gamma=100 long-tail
profile, a balanced 10,000-sample test set, and the two heads the paper uses (linear, and
the 2-FC head of width 2048 started from a projection block).

Three ways, timed in one run:
  (a) one Ray Tune trial per fine-tune (a real local Tune run, 1 CPU each, 2 at a time),
      K of them timed and extrapolated linearly to all trials;
  (b) the trials one after the other in this process (`train_reference`; and
      `train_stacked` with one trial), a spread-out subset timed and extrapolated;
  (c) ltsweep's way: `train_stacked` with all trials at once.
(b) and (c) are interleaved (c, half of b, c again, other half of b) so that a change of
machine load hits both. The second (c) run trains on features stored as float16 (cast back
to float32 before training, exactly as `train_stacked` does): it is a timing repetition of
(c) and, compared with the first, the accuracy cost of float16 storage.

For the wide head it also reports the arithmetic rate of training against a bare
`torch.bmm` of the head's first-layer shapes timed in the same run.

`--candidate FILE` times another implementation of `train_stacked` (a file defining it,
e.g. a proposed patch of ltsweep/train/finetune.py) side by side with ltsweep's.

Timings only: nothing here asserts a speed. Results go to stdout and to this script's
section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import io
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from results_md import publish, timed

from ltsweep.data import long_tail_counts, symmetric_noise
from ltsweep.losses import label_prior, superloss
from ltsweep.train.finetune import (
    HeadSpec,
    Trial,
    _batches,
    train_reference,
    train_stacked,
)

LOSSES = ("ce", "ce+sl", "la", "la+sl")
SECTION = "bench_finetune"

StackedFn = Callable[..., torch.Tensor]


# --------------------------------------------------------------------------- data


@dataclass
class Problem:
    """Features, labels and trials of one pre-train: what every way trains on."""

    train_x: torch.Tensor  # (N, D) float32
    test_x: torch.Tensor  # (M, D) float32
    train_y: np.ndarray  # (N,) clean labels
    test_y: np.ndarray  # (M,)
    num_classes: int
    specs: list[dict[str, Any]]  # per trial: noise, loss, seed (JSON-able, for Ray)
    trials: list[Trial]
    head_init: dict[str, torch.Tensor]  # the projection block the wide head starts from


def make_problem(args: argparse.Namespace) -> Problem:
    """Class means plus unit Gaussian noise: learnable, not saturated, cheap to make.

    Random features keep the benchmark free of data downloads and pre-training; what is
    timed (the head's training) does not depend on where the features came from, only on
    their shape. The class separation is chosen so the clean trials reach ~90 % and the
    noisy ones less, so the float16 comparison is not made on a saturated problem.
    """
    c, d = args.classes, args.dim
    counts = long_tail_counts(args.n_max, c, args.gamma)
    g = torch.Generator().manual_seed(args.data_seed)
    means = torch.randn(c, d, generator=g) * args.class_sep
    train_y = np.repeat(np.arange(c), counts)
    test_y = np.repeat(np.arange(c), args.test_per_class)
    train_x = means[torch.as_tensor(train_y)] + torch.randn(len(train_y), d, generator=g)
    test_x = means[torch.as_tensor(test_y)] + torch.randn(len(test_y), d, generator=g)
    noises = [round(i / args.noise_levels, 6) for i in range(args.noise_levels)]
    specs = [
        {"noise": nz, "loss": loss, "seed": seed}
        for nz in noises
        for loss in LOSSES
        for seed in range(args.seeds)
    ]
    trials = [make_trial(train_y, c, s, args.linear_lr, args.linear_wd) for s in specs]
    h = args.width
    w1 = torch.randn(h, d, generator=g) / math.sqrt(d)
    b1 = torch.randn(h, generator=g) * 0.01
    pre = train_x @ w1.T + b1  # running stats as a pre-trained block would hold them
    head_init = {
        "w1": w1,
        "b1": b1,
        "bn_weight": torch.ones(h),
        "bn_bias": torch.zeros(h),
        "bn_mean": pre.mean(0),
        "bn_var": pre.var(0),
    }
    return Problem(train_x, test_x, train_y, test_y, c, specs, trials, head_init)


def make_trial(clean: np.ndarray, c: int, spec: dict[str, Any], lr: float, wd: float) -> Trial:
    """One trial as ltsweep builds it: the trial seed is also the noise seed."""
    labels = symmetric_noise(clean, c, spec["noise"], spec["seed"]).labels
    return Trial(labels, spec["loss"], lr, wd, spec["seed"], 1.0, 4.0, math.log(c))


def with_lr(trials: list[Trial], lr: float, wd: float) -> list[Trial]:
    return [
        Trial(t.labels, t.loss, lr, wd, t.seed, t.la_tau, t.sl_lambda, t.sl_threshold)
        for t in trials
    ]


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n): a subset with every loss, noise and seed mixed in."""
    if k <= 0 or k >= n:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


# --------------------------------------------------------------------------- timing helpers


def accuracy(preds: torch.Tensor, test_y: np.ndarray) -> np.ndarray:
    """Per-trial top-1 accuracy of predictions (T, M)."""
    return (preds.cpu().numpy() == test_y[None]).mean(1)


def load_candidate(path: str) -> StackedFn:
    """`train_stacked` from a file (e.g. a patched copy of ltsweep/train/finetune.py)."""
    spec = importlib.util.spec_from_file_location("candidate_finetune", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module.train_stacked


def bare_bmm_rate(t: int, b: int, d: int, h: int, seconds: float) -> float:
    """FLOP/s of torch.bmm (t, b, d) x (t, d, h): the ceiling the wide head's matmuls aim at."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(t, b, d, generator=g), torch.randn(t, d, h, generator=g)
    torch.bmm(x, w)
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        torch.bmm(x, w)
        n += 1
    return 2.0 * t * b * d * h * n / (time.perf_counter() - t0)


def train_flops(
    n: int, m: int, batch: int, epochs: int, d: int, h: int, c: int
) -> tuple[float, float]:
    """(nominal, needed) FLOPs of one wide-head trial as `train_stacked` runs it.

    nominal: the usual convention, training forward matmuls x 3 (forward + two backward
    products). needed: what the maths requires here: the features need no gradient, so the
    first layer's backward is one product (its weight gradient), not two. Both include the
    forward pass over the m test samples, which is inside the timed call.
    """
    samples = sum(e - s for s, e in _batches(n, batch)) * epochs
    first, second = 2.0 * d * h, 2.0 * h * c
    test = (first + second) * m
    return 3 * (first + second) * samples + test, (2 * first + 3 * second) * samples + test


def train_textbook(
    train_x: torch.Tensor, test_x: torch.Tensor, c: int, head: HeadSpec, trial: Trial
) -> torch.Tensor:
    """One linear trial as fine-tuning scripts are usually written: the other baseline.

    A shuffling DataLoader over a TensorDataset (per-sample indexing and collation),
    nn.Linear, torch.optim.Adam, F.cross_entropy with LA / SuperLoss added as in
    `train_reference`. Same maths as (b), with the per-batch cost of the data pipeline that
    most scripts have; the earlier figure of ~9.6 s per linear head is of this kind.
    """
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(trial.seed)
    model = nn.Linear(train_x.shape[1], c)
    opt = torch.optim.Adam(model.parameters(), lr=trial.lr, weight_decay=trial.weight_decay)
    log_prior = label_prior(trial.labels, c).log()
    data = TensorDataset(train_x.float(), torch.as_tensor(trial.labels, dtype=torch.long))
    loader = DataLoader(data, batch_size=head.batch_size, shuffle=True, generator=gen)
    for _ in range(head.epochs):
        for x, y in loader:
            logits = model(x)
            if trial.loss.startswith("la"):
                logits = logits + trial.la_tau * log_prior
            loss = F.cross_entropy(logits, y, reduction="none")
            if trial.loss.endswith("+sl"):
                loss = superloss(loss, trial.sl_threshold, trial.sl_lambda)
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
    with torch.no_grad():
        return model(test_x.float()).argmax(-1)


# --------------------------------------------------------------------------- (a) Ray Tune


def _tune_trial(config: dict[str, Any], features_path: str) -> None:
    """One Tune trial = one fine-tune: load the features, make the labels, train alone."""
    import time as _time

    import torch as _torch
    from ray import tune as _tune

    from ltsweep.data import symmetric_noise as _noise
    from ltsweep.train.finetune import HeadSpec as _HeadSpec
    from ltsweep.train.finetune import Trial as _Trial
    from ltsweep.train.finetune import train_stacked as _train

    start = _time.time()
    _torch.set_num_threads(1)  # what ltsweep's use_threads does for a 1-CPU trial
    blob = _torch.load(features_path, weights_only=True)
    spec, head = config["spec"], config["head"]
    c = int(blob["num_classes"])
    labels = _noise(blob["train_labels"].numpy(), c, spec["noise"], spec["seed"]).labels
    trial = _Trial(
        labels, spec["loss"], head["lr"], head["wd"], spec["seed"], 1.0, 4.0, math.log(c)
    )
    head_init = {k[5:]: v for k, v in blob.items() if k.startswith("head.")} or None
    spec_ = _HeadSpec(head["mode"], head["epochs"], head["batch_size"])
    if config.get("impl") == "textbook":
        # a global of this script: cloudpickle ships it to the worker by value
        pred = train_textbook(blob["train"], blob["test"], c, spec_, trial)
    else:
        init = head_init if head["mode"] == "full" else None
        pred = _train(blob["train"], blob["test"], c, spec_, [trial], init)[0]
    acc = float((pred == blob["test_labels"]).float().mean())
    _tune.report({"acc": acc, "start": start, "end": _time.time()})


def run_tune(
    features_path: str, jobs: list[tuple[str, list[dict[str, Any]], dict[str, Any], str]]
) -> dict[str, dict[str, float]]:
    """A real local Ray Tune run per job (name, specs, head, impl): fit time and trial span.

    impl "ltsweep" trains with ltsweep's one-trial path (`train_stacked([trial])`, what
    `execution.group_finetunes: false` runs), "textbook" with `train_textbook`.
    """
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import logging

    import ray
    from ray import tune

    out: dict[str, dict[str, float]] = {}
    t_init, _ = timed(
        lambda: ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=False,
        )
    )
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tune-") as storage:
            for name, specs, head, impl in jobs:
                trainable = tune.with_resources(
                    tune.with_parameters(_tune_trial, features_path=features_path), {"cpu": 1}
                )
                tuner = tune.Tuner(
                    trainable,
                    param_space={"spec": tune.grid_search(specs), "head": head, "impl": impl},
                    tune_config=tune.TuneConfig(reuse_actors=True),
                    run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0),
                )
                with (
                    contextlib.redirect_stdout(io.StringIO()),
                    contextlib.redirect_stderr(io.StringIO()),
                ):
                    fit_s, grid = timed(tuner.fit)
                rows = [r.metrics for r in grid if r.error is None]
                if len(rows) != len(specs):
                    raise RuntimeError(f"{len(specs) - len(rows)} Tune trials of {name} failed")
                span = max(r["end"] for r in rows) - min(r["start"] for r in rows)
                out[name] = {
                    "init_s": t_init,
                    "fit_s": fit_s,
                    "span_s": span,
                    "k": len(specs),
                    "acc": float(np.mean([r["acc"] for r in rows])),
                }
    finally:
        ray.shutdown()
    return out


def extrapolate_tune(r: dict[str, float], total: int) -> float:
    """Seconds per trial of (a) at `total` trials: Tune's fixed cost once, then the steady rate.

    The span from the first trial's start to the last one's end over k trials is the
    steady throughput (2 running at a time); what fit() took beyond that span (actor start,
    Tune's bookkeeping) is paid once. ray.init is left out (it is paid once per sweep).
    """
    fixed = max(0.0, r["fit_s"] - r["span_s"])
    return (fixed + total * r["span_s"] / r["k"]) / total


# --------------------------------------------------------------------------- reporting


def fmt(x: float, digits: int = 3) -> str:
    if x != x:  # NaN
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def ratio(x: float, y: float) -> str:
    """How many times longer x took than y, as the speed-up column shows it."""
    return "n/a" if x != x or y != y else f"{x / y:.3g}x"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def environment(load_start: tuple[float, ...]) -> str:
    import ray

    load_end = os.getloadavg()
    return (
        f"Command: `{shlex.join(['python', *sys.argv])}`  \n"
        f"Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}; "
        f"torch {torch.__version__}, ray {ray.__version__}, Python {platform.python_version()}; "
        f"os.cpu_count() = {os.cpu_count()}; torch threads {torch.get_num_threads()}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}  \n"
        f"Load average (1/5/15 min): start {'/'.join(f'{x:.2f}' for x in load_start)}, "
        f"end {'/'.join(f'{x:.2f}' for x in load_end)}"
    )


def profile_epoch(fn: StackedFn, p: Problem, head: HeadSpec, trials: list[Trial], init: Any) -> str:
    """torch.profiler's top ops (self CPU time) for one call: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(p.train_x, p.test_x, p.num_classes, head, trials, init)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


# --------------------------------------------------------------------------- main


def fanout(args: argparse.Namespace) -> None:
    """(c) alone on a device, features held there: one untimed pass of one epoch (kernels,
    allocator), then all trials for --linear-epochs; trials/s to the file."""
    torch.set_num_threads(args.threads)
    p = make_problem(args)
    dev = torch.device(args.device)
    train_x, test_x = p.train_x.to(dev), p.test_x.to(dev)
    c, T = p.num_classes, len(p.trials)
    lin = HeadSpec("linear", args.linear_epochs, args.batch_size)

    def run(head: HeadSpec) -> torch.Tensor:
        preds = train_stacked(train_x, test_x, c, head, p.trials)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return preds

    run(HeadSpec("linear", 1, args.batch_size))
    seconds, preds = timed(lambda: run(lin))
    acc = accuracy(preds.cpu(), p.test_y)
    lines = [
        f"{T} linear-head trials x {args.linear_epochs} epochs, {len(p.train_y)} train / "
        f"{len(p.test_y)} test samples of {args.dim}-d, batch {args.batch_size}, on {dev}",
        "",
        "| trials | epochs | seconds | trials/s | trial-epochs/s | mean accuracy |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {T} | {args.linear_epochs} | {seconds:.2f} | {T / seconds:.3g} | "
        f"{T * args.linear_epochs / seconds:.3g} | {100 * float(np.mean(acc)):.1f} % |",
    ]
    print("\n".join(lines))
    Path(args.fanout).write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-max", type=int, default=5000, help="largest class (CIFAR-10: 5000)")
    ap.add_argument("--gamma", type=float, default=100.0, help="long-tail ratio")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--dim", type=int, default=512, help="feature size")
    ap.add_argument("--test-per-class", type=int, default=1000)
    ap.add_argument("--class-sep", type=float, default=0.2, help="std of the class means")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--noise-levels", type=int, default=10, help="noise 0, 1/L, ..., (L-1)/L")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--linear-epochs", type=int, default=25)
    ap.add_argument("--linear-lr", type=float, default=1e-3)
    ap.add_argument("--linear-wd", type=float, default=1e-6)
    ap.add_argument("--width", type=int, default=2048, help="hidden width of the wide head")
    ap.add_argument("--wide-epochs", type=int, default=2, help="paper: 10 (time is linear in it)")
    ap.add_argument("--wide-lr", type=float, default=3e-3)
    ap.add_argument("--wide-trials", type=int, default=6, help="wide-head trials stacked in (c)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for (b) and (c)")
    ap.add_argument("--seq-trials", type=int, default=8, help="(b): linear trials timed; 0 = all")
    ap.add_argument("--wide-seq-trials", type=int, default=2, help="(b): wide trials timed")
    ap.add_argument("--tune-trials", type=int, default=12, help="(a): linear Tune trials; 0 = skip")
    ap.add_argument("--tune-wide-trials", type=int, default=2, help="(a): wide Tune trials")
    ap.add_argument(
        "--textbook-trials", type=int, default=3, help="(b0): linear textbook trials timed"
    )
    ap.add_argument(
        "--tune-textbook-trials", type=int, default=4, help="(a0): textbook Tune trials; 0 = skip"
    )
    ap.add_argument("--bare-seconds", type=float, default=3.0, help="per bare-bmm measurement")
    ap.add_argument("--candidate", help="file defining another train_stacked to time beside (c)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler top ops of (c)")
    ap.add_argument("--no-fragment", action="store_true", help="do not update the results file")
    ap.add_argument(
        "--fanout",
        metavar="FILE",
        help="only (c), the stacked fan-out of all trials (linear head), on --device; its "
        "trials/s as a markdown table in FILE (benchmarks/gpu_acceptance.sh)",
    )
    ap.add_argument("--device", default="cpu", help="with --fanout: cpu or cuda")
    args = ap.parse_args(argv)
    if args.fanout:
        fanout(args)
        return

    load_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    p = make_problem(args)
    T, n, c, d = len(p.trials), len(p.train_y), p.num_classes, args.dim
    candidate = load_candidate(args.candidate) if args.candidate else None
    lin = HeadSpec("linear", args.linear_epochs, args.batch_size)
    wide = HeadSpec("full", args.wide_epochs, args.batch_size)
    print(f"{T} trials, {n} train / {len(p.test_y)} test samples of {d}-d, load {os.getloadavg()}")

    # ---- linear head: (c), half of (b), (c) on float16-stored features, other half of (b)
    seq = spread(T, args.seq_trials)
    halves = (seq[: (len(seq) + 1) // 2], seq[(len(seq) + 1) // 2 :])
    ref_s: dict[int, float] = {}
    one_s: dict[int, float] = {}
    ref_pred: dict[int, torch.Tensor] = {}

    def sequential(indices: list[int]) -> None:
        for i in indices:
            ref_s[i], ref_pred[i] = timed(
                lambda i=i: train_reference(p.train_x, p.test_x, c, lin, p.trials[i])
            )
            one_s[i], _ = timed(
                lambda i=i: train_stacked(p.train_x, p.test_x, c, lin, [p.trials[i]])
            )
            print(
                f"  (b) trial {i}: reference {ref_s[i]:.2f} s, stacked T=1 {one_s[i]:.2f} s",
                flush=True,
            )

    half_x = p.train_x.half()
    c32_s, pred32 = timed(lambda: train_stacked(p.train_x, p.test_x, c, lin, p.trials))
    print(f"(c) fp32: {c32_s:.1f} s, load {os.getloadavg()[0]:.2f}", flush=True)
    sequential(halves[0])
    c16_s, pred16 = timed(lambda: train_stacked(half_x, p.test_x.half(), c, lin, p.trials))
    print(f"(c) fp16-stored: {c16_s:.1f} s, load {os.getloadavg()[0]:.2f}", flush=True)
    sequential(halves[1])
    textbook_s: list[float] = []
    for i in spread(T, args.textbook_trials) if args.textbook_trials > 0 else []:
        textbook_s.append(
            timed(lambda i=i: train_textbook(p.train_x, p.test_x, c, lin, p.trials[i]))[0]
        )
        print(f"  (b0) textbook trial {i}: {textbook_s[-1]:.2f} s", flush=True)
    lin_chunks = len({t.seed for t in p.trials})
    lin_bare = bare_bmm_rate(lin_chunks, args.batch_size, d, T // lin_chunks * c, args.bare_seconds)
    cand_s = math.nan
    if candidate is not None:
        cand_s, cand_pred = timed(lambda: candidate(p.train_x, p.test_x, c, lin, p.trials))
        cand_agree = float((cand_pred == pred32).float().mean())
        print(f"(c*) candidate: {cand_s:.1f} s (agrees with (c) on {cand_agree:.4f})", flush=True)
    acc32, acc16 = accuracy(pred32, p.test_y), accuracy(pred16, p.test_y)
    agree_b = float(np.mean([(ref_pred[i] == pred32[i]).float().mean().item() for i in seq]))

    # ---- wide head: bare bmm, (c), (b), bare bmm again
    wsel = spread(T, args.wide_trials)
    wtrials = with_lr([p.trials[i] for i in wsel], args.wide_lr, 0.0)
    wseq = wtrials[: args.wide_seq_trials]
    tw = len(wtrials)
    bare1 = bare_bmm_rate(tw, args.batch_size, d, args.width, args.bare_seconds)
    wc_s, wpred = timed(lambda: train_stacked(p.train_x, p.test_x, c, wide, wtrials, p.head_init))
    print(f"(c) wide T={tw}: {wc_s:.1f} s", flush=True)
    wref, wone = [], []
    for tr in wseq:
        wref.append(
            timed(lambda tr=tr: train_reference(p.train_x, p.test_x, c, wide, tr, p.head_init))[0]
        )
        wone.append(
            timed(lambda tr=tr: train_stacked(p.train_x, p.test_x, c, wide, [tr], p.head_init))[0]
        )
        print(f"  (b) wide: reference {wref[-1]:.1f} s, stacked T=1 {wone[-1]:.1f} s", flush=True)
    wcand_s = math.nan
    if candidate is not None:
        wcand_s, _ = timed(lambda: candidate(p.train_x, p.test_x, c, wide, wtrials, p.head_init))
        print(f"(c*) wide candidate: {wcand_s:.1f} s", flush=True)
    bare2 = bare_bmm_rate(tw, args.batch_size, d, args.width, args.bare_seconds)
    bare = (bare1 + bare2) / 2
    nominal, needed = train_flops(
        n, len(p.test_y), args.batch_size, args.wide_epochs, d, args.width, c
    )
    wacc = accuracy(wpred, p.test_y)

    # ---- (a) Ray Tune, last: it starts processes that would disturb the runs above
    tune_res: dict[str, dict[str, float]] = {}
    if args.tune_trials > 0:
        with tempfile.TemporaryDirectory(prefix="bench-ft-") as tmp:
            path = str(Path(tmp) / "features.pt")
            blob: dict[str, Any] = {
                "train": p.train_x,
                "test": p.test_x,
                "train_labels": torch.as_tensor(p.train_y),
                "test_labels": torch.as_tensor(p.test_y),
                "num_classes": torch.tensor(c),
            }
            blob |= {f"head.{k}": v for k, v in p.head_init.items()}
            torch.save(blob, path)
            head_lin = {
                "mode": "linear",
                "epochs": lin.epochs,
                "batch_size": lin.batch_size,
                "lr": args.linear_lr,
                "wd": args.linear_wd,
            }
            head_wide = {
                "mode": "full",
                "epochs": wide.epochs,
                "batch_size": wide.batch_size,
                "lr": args.wide_lr,
                "wd": 0.0,
            }
            lin_specs = [p.specs[i] for i in spread(T, args.tune_trials)]
            jobs = [("linear", lin_specs, head_lin, "ltsweep")]
            if args.tune_textbook_trials > 0:
                tb_specs = [p.specs[i] for i in spread(T, args.tune_textbook_trials)]
                jobs.append(("linear-textbook", tb_specs, head_lin, "textbook"))
            if args.tune_wide_trials > 0:
                wide_specs = [p.specs[i] for i in wsel[: args.tune_wide_trials]]
                jobs.append(("wide", wide_specs, head_wide, "ltsweep"))
            tune_res = run_tune(path, jobs)
        for name, r in tune_res.items():
            print(f"(a) {name}: {r}", flush=True)

    # ---- tables
    c_lin = (c32_s + c16_s) / 2 / T
    b_ref = float(np.mean(list(ref_s.values())))
    b_one = float(np.mean(list(one_s.values())))
    a_lin = extrapolate_tune(tune_res["linear"], T) if "linear" in tune_res else math.nan
    a_lin_raw = (
        tune_res["linear"]["fit_s"] / tune_res["linear"]["k"] if "linear" in tune_res else math.nan
    )
    k_lin = int(tune_res["linear"]["k"]) if "linear" in tune_res else 0
    tb = tune_res.get("linear-textbook")
    a_tb = extrapolate_tune(tb, T) if tb else math.nan
    b_tb = float(np.mean(textbook_s)) if textbook_s else math.nan
    rows = [
        [
            f"(a0) one Ray Tune trial per fine-tune, `train_textbook`; {int(tb['k']) if tb else 0} of {T} timed, extrapolated",
            fmt(a_tb * T),
            fmt(a_tb),
            ratio(a_tb, c_lin),
        ],
        [
            f"(b0) `train_textbook` one after another; {len(textbook_s)} of {T} timed, extrapolated",
            fmt(b_tb * T),
            fmt(b_tb),
            ratio(b_tb, c_lin),
        ],
        [
            f"(a) one Ray Tune trial per fine-tune, ltsweep's one-trial path (1 CPU, 2 at a time, 1 thread); {k_lin} of {T} timed, extrapolated",
            fmt(a_lin * T),
            fmt(a_lin),
            ratio(a_lin, c_lin),
        ],
        [
            f"(b) `train_reference` one after another; {len(seq)} of {T} timed, extrapolated",
            fmt(b_ref * T),
            fmt(b_ref),
            ratio(b_ref, c_lin),
        ],
        [
            f"(b') `train_stacked([trial])` one after another; {len(seq)} of {T}, extrapolated",
            fmt(b_one * T),
            fmt(b_one),
            ratio(b_one, c_lin),
        ],
        [
            f"(c) `train_stacked`, all {T} at once, {args.threads} threads: run 1 (fp32 features)",
            fmt(c32_s),
            fmt(c32_s / T),
            "",
        ],
        ["(c) run 2 (features stored fp16, cast to fp32)", fmt(c16_s), fmt(c16_s / T), ""],
        [
            "(c) mean of the two runs (the yardstick of the speed-ups)",
            fmt(c_lin * T),
            fmt(c_lin),
            "1x",
        ],
    ]
    if candidate is not None:
        rows.append(
            [
                f"(c*) candidate `{args.candidate}`, all {T} at once",
                fmt(cand_s),
                fmt(cand_s / T),
                ratio(cand_s / T, c_lin),
            ]
        )
    lin_table = table(
        [
            f"way (linear head, {d}->{c}, {args.linear_epochs} epochs)",
            "s for all trials",
            "s / trial",
            "(c) speed-up",
        ],
        rows,
    )
    lin_notes = (
        f"Fit time / k of (a) without the extrapolation: {fmt(a_lin_raw)} s per trial; "
        f"ray.init {fmt(tune_res.get('linear', {}).get('init_s', math.nan))} s (not counted). "
        f"(b) and (c) predictions agree on {agree_b:.2%} of the test set. "
        f"Mean accuracy of (c): {acc32.mean():.3f} (noise 0: {acc32[: 4 * args.seeds].mean():.3f}, "
        f"noise {(args.noise_levels - 1) / args.noise_levels:.1f}: {acc32[-4 * args.seeds :].mean():.3f})."
    )
    samples = sum(e - s_ for s_, e in _batches(n, args.batch_size)) * args.linear_epochs
    fwd = 2.0 * d * c
    lin_nominal = 3 * fwd * samples + fwd * len(p.test_y)
    lin_needed = 2 * fwd * samples + fwd * len(p.test_y)  # no feature gradient
    lin_rate_table = table(
        ["linear head arithmetic rate, (c) mean of the two runs", "GFLOP/s", "of bare bmm"],
        [
            [
                f"bare `torch.bmm` ({lin_chunks}, {args.batch_size}, {d}) x "
                f"({lin_chunks}, {d}, {T // lin_chunks * c}): one seed's trials side by side",
                fmt(lin_bare / 1e9),
                "100 %",
            ],
            [
                "(c) nominal FLOPs (training forward x 3, + test forward)",
                fmt(lin_nominal / c_lin / 1e9),
                f"{lin_nominal / c_lin / lin_bare:.0%}",
            ],
            [
                "(c) needed FLOPs (forward + weight gradient, + test forward)",
                fmt(lin_needed / c_lin / 1e9),
                f"{lin_needed / c_lin / lin_bare:.0%}",
            ],
        ],
    )

    wb_ref, wb_one = float(np.mean(wref)), float(np.mean(wone))
    a_w = extrapolate_tune(tune_res["wide"], tw) if "wide" in tune_res else math.nan
    wide_rows = [
        [
            f"(a) Ray Tune, one per trial; {int(tune_res['wide']['k']) if 'wide' in tune_res else 0} timed",
            fmt(a_w),
            ratio(a_w, wc_s / tw),
        ],
        [
            f"(b) `train_reference` one after another; {len(wref)} timed",
            fmt(wb_ref),
            ratio(wb_ref, wc_s / tw),
        ],
        [
            f"(b') `train_stacked([trial])` one after another; {len(wone)} timed",
            fmt(wb_one),
            ratio(wb_one, wc_s / tw),
        ],
        [f"(c) `train_stacked`, {tw} at once, {args.threads} threads", fmt(wc_s / tw), "1x"],
    ]
    if candidate is not None:
        wide_rows.append([f"(c*) candidate, {tw} at once", fmt(wcand_s / tw), ratio(wcand_s, wc_s)])
    wide_table = table(
        [
            f"way (wide head 512->{args.width}->{c}, mode full, {args.wide_epochs} epoch(s))",
            "s / trial",
            "(c) speed-up",
        ],
        wide_rows,
    )
    rate_rows = [
        [
            "bare `torch.bmm` "
            f"({tw}, {args.batch_size}, {d}) x ({tw}, {d}, {args.width}), mean of before/after",
            fmt(bare / 1e9),
            "100 %",
            "",
        ],
        [
            "(c) nominal FLOPs (training forward x 3, + test forward)",
            fmt(nominal * tw / wc_s / 1e9),
            f"{nominal * tw / wc_s / bare:.0%}",
            fmt(nominal / 1e9),
        ],
        [
            "(c) needed FLOPs (no feature gradient, + test forward)",
            fmt(needed * tw / wc_s / 1e9),
            f"{needed * tw / wc_s / bare:.0%}",
            fmt(needed / 1e9),
        ],
    ]
    if candidate is not None:
        rate_rows.append(
            [
                "(c*) candidate, nominal FLOPs",
                fmt(nominal * tw / wcand_s / 1e9),
                f"{nominal * tw / wcand_s / bare:.0%}",
                fmt(nominal / 1e9),
            ]
        )
    rate_table = table(
        ["wide head arithmetic rate", "GFLOP/s", "of bare bmm", "GFLOP / trial"], rate_rows
    )
    rate_notes = (
        f"Bare bmm before: {fmt(bare1 / 1e9)} GFLOP/s, after: {fmt(bare2 / 1e9)} GFLOP/s. "
        f"The timed (c) includes setup and the test-set prediction (not counted as FLOPs). "
        f"Mean accuracy of the wide trials: {wacc.mean():.3f}."
    )

    diff = np.abs(acc16 - acc32)
    bytes32 = p.train_x.nbytes + p.test_x.nbytes
    bytes16 = half_x.nbytes + p.test_x.half().nbytes
    fp16_table = table(
        ["float16 feature storage (linear, all trials)", "value"],
        [
            ["mean abs accuracy difference vs float32", f"{diff.mean() * 100:.3f} points"],
            ["max abs accuracy difference", f"{diff.max() * 100:.3f} points"],
            [
                "trials with identical test predictions",
                f"{int((pred16 == pred32).all(1).sum())} of {T}",
            ],
            [
                "feature bytes fp16 / fp32",
                f"{bytes16 / 2**20:.1f} / {bytes32 / 2**20:.1f} MiB = {bytes16 / bytes32:.2f}",
            ],
        ],
    )
    body = "\n\n".join(
        [
            f"## Fine-tuning: stacked vs one trial at a time\n\n{environment(load_start)}",
            lin_table,
            lin_notes,
            lin_rate_table,
            wide_table,
            rate_table,
            rate_notes,
            fp16_table,
        ]
    )
    if args.profile:
        profiles = [
            (
                "linear, all trials, 1 epoch",
                train_stacked,
                HeadSpec("linear", 1, args.batch_size),
                p.trials,
                None,
            ),
            (
                "wide, 1 epoch",
                train_stacked,
                HeadSpec("full", 1, args.batch_size),
                wtrials,
                p.head_init,
            ),
        ]
        if candidate is not None:
            profiles += [
                (f"candidate {label}", candidate, h, tr, init) for label, _, h, tr, init in profiles
            ]
        for label, fn, h, tr, init in profiles:
            body += f"\n\n<details><summary>torch.profiler, (c) {label}</summary>\n\n```\n"
            body += profile_epoch(fn, p, h, tr, init) + "```\n</details>"
    publish(SECTION, body, write=not args.no_fragment)


if __name__ == "__main__":
    main()
