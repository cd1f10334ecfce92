#!/usr/bin/env python
"""Cached frozen features against re-encoding the images for every trial.

Why this exists: ltsweep encodes the training and test images through the frozen encoder
ONCE per pre-train, stores the features in the content-keyed cache, and then trains every
fine-tune head of that pre-train on them (`train_stacked`, one call per group). The
alternative, what a per-trial script does, is that each fine-tune trial runs the frozen
encoder over the images itself and then trains its head alone. This script times the
fine-tune stage of a sweep (default: the smoke grid, `sweeps/smoke.yaml`) both ways in one
run, alternating which way goes first per pre-train so a change of load hits both.

The encoder is randomly initialised (seeded like `run_pretrain` seeds it): pre-training is
not what is timed, and the cost of a forward pass does not depend on the weights. The
cached way includes what ltsweep really does with the features: save them to a cache
(SHA-256 recorded), verify and load them back, then group and train.

Timings only: nothing here asserts a speed. Results go to stdout and to this script's
section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from results_md import publish, timed

from ltsweep.augment import Normalize
from ltsweep.data.cell import dataset_for, noisy_labels, training_subset
from ltsweep.device import pick_device
from ltsweep.models.resnet import build_encoder
from ltsweep.planning.plan import make_plan
from ltsweep.store import cache as store
from ltsweep.sweep.schema import Sweep, load_sweep, parse_sweep
from ltsweep.train.finetune import HeadSpec, Trial, train_reference, train_stacked
from ltsweep.train.inference import forward_eval
from ltsweep.train.selfsup.base import build_method
from ltsweep.units.finetune import FinetuneUnit, group_finetunes
from ltsweep.units.pretrain import PretrainUnit

SECTION = "bench_features"
ROOT = Path(__file__).resolve().parent.parent


def trial_of(u: FinetuneUnit, clean: np.ndarray, num_classes: int) -> Trial:
    """The Trial `run_finetunes` builds for unit `u`."""
    labels = noisy_labels(clean, num_classes, u.noise, u.noise_type, u.seed).labels
    return Trial(
        labels, u.loss, u.lr, u.weight_decay, u.seed, u.la_tau, u.sl_lambda, u.sl_threshold
    )


class PretrainBench:
    """One pre-train of the sweep: its random encoder, data subset and fine-tune units."""

    def __init__(self, sweep: Sweep, p: PretrainUnit, units: list[FinetuneUnit]) -> None:
        self.sweep, self.p, self.units = sweep, p, units
        self.data = dataset_for(sweep)
        self.device = pick_device(sweep.execution.device)
        self.index = training_subset(self.data, p.gamma, p.data_seed)
        self.test_index = np.arange(len(self.data.test))
        settings = sweep.ssl_settings(p.method)
        torch.manual_seed(p.data_seed)  # as run_pretrain seeds the encoder's init
        encoder = build_encoder(sweep.backbone.arch, sweep.backbone.width, self.data.stem)
        self.method = build_method(p.method, encoder, settings).to(self.device)
        self.head_init = self.method.head_init() if settings.finetune.head == "mlp" else None
        self.normalize = Normalize(self.data.mean, self.data.std, self.device)
        self.clean = self.data.train.labels[self.index]

    def features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen train and test features, exactly as run_pretrain encodes them."""
        amp = self.sweep.execution.amp
        enc, dev = self.method.encoder, self.device
        train_f = forward_eval(enc, self.data.train, self.index, self.normalize, dev, amp)
        test_f = forward_eval(enc, self.data.test, self.test_index, self.normalize, dev, amp)
        return train_f, test_f

    def cached(self, cache: Path) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """ltsweep's way: encode once, store, load back (verified), train each group stacked."""
        times: dict[str, float] = {}
        times["encode"], (train_f, test_f) = timed(self.features)
        self.feature_std = float(train_f.std(0).mean())
        dtype = getattr(torch, self.sweep.execution.feature_dtype)
        tensors = {"train": train_f.to(dtype), "test": test_f.to(dtype)}

        def roundtrip() -> dict[str, Any]:
            store.save_features(cache, self.p.key, self.p.epochs, tensors)
            return store.load_features(cache, self.p.key, self.p.epochs)

        times["store"], feats = timed(roundtrip)
        preds: dict[str, torch.Tensor] = {}
        t0 = time.perf_counter()
        ex = self.sweep.execution
        for group in group_finetunes(self.units, ex.max_group_size, together=True):
            first = group[0]
            trials = [trial_of(u, self.clean, self.sweep.num_classes) for u in group]
            out = train_stacked(
                feats["train"].to(self.device),
                feats["test"].to(self.device),
                self.sweep.num_classes,
                HeadSpec(first.head, first.epochs, first.batch_size),
                trials,
                self.head_init,
            )
            preds |= {u.key: row.cpu() for u, row in zip(group, out, strict=True)}
        times["train"] = time.perf_counter() - t0
        return times, preds

    def per_trial(self) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """The alternative: every trial encodes the images itself, then trains alone."""
        times = {"encode": 0.0, "train": 0.0}
        preds: dict[str, torch.Tensor] = {}
        for u in self.units:
            dt_enc, (train_f, test_f) = timed(self.features)
            trial = trial_of(u, self.clean, self.sweep.num_classes)
            head = HeadSpec(u.head, u.epochs, u.batch_size)
            dt_train, pred = timed(
                lambda trial=trial, head=head, train_f=train_f, test_f=test_f: train_reference(
                    train_f, test_f, self.sweep.num_classes, head, trial, self.head_init
                )
            )
            times["encode"] += dt_enc
            times["train"] += dt_train
            preds[u.key] = pred.cpu()
        return times, preds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", default=str(ROOT / "sweeps" / "smoke.yaml"))
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: the sweep's resources.finetune.cpu)",
    )
    ap.add_argument("--epochs", type=int, default=0, help="fine-tune epochs (0: the sweep's)")
    ap.add_argument("--no-fragment", action="store_true", help="do not update the results file")
    args = ap.parse_args(argv)

    load_start = os.getloadavg()
    sweep = load_sweep(args.sweep)
    if args.epochs:  # a quicker or longer fine-tune, same grid
        raw = sweep.model_dump(mode="json")
        for m in sweep.grid.ssl:
            raw["ssl"].setdefault(m, {}).setdefault("finetune", {})["epochs"] = args.epochs
        sweep = parse_sweep(raw, args.sweep)
    threads = args.threads or max(1, int(sweep.resources.finetune.cpu))
    torch.set_num_threads(threads)
    plan = make_plan(sweep)
    by_pretrain: dict[str, list[FinetuneUnit]] = {}
    for u in plan.finetunes:
        by_pretrain.setdefault(u.pretrain_key, []).append(u)
    print(f"{len(plan.pretrains)} pre-trains, {len(plan.finetunes)} fine-tunes, threads {threads}")

    rows: list[list[str]] = []
    total = {"cached": 0.0, "per_trial": 0.0}
    parts = {
        "cached": {"encode": 0.0, "store": 0.0, "train": 0.0},
        "per_trial": {"encode": 0.0, "train": 0.0},
    }
    stds: list[float] = []  # mean per-dimension std of the train features, per pre-train
    agree: dict[str, list[float]] = {}  # head mode -> per-trial agreement of the two ways
    with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
        for i, p in enumerate(plan.pretrains):
            bench = PretrainBench(sweep, p, by_pretrain[p.key])
            bench.features()  # warm-up: first conv calls pay one-off setup, in neither way
            order = ("cached", "per_trial") if i % 2 == 0 else ("per_trial", "cached")
            results: dict[str, tuple[dict[str, float], dict[str, torch.Tensor]]] = {}
            for way in order:
                if way == "cached":
                    results[way] = bench.cached(Path(tmp))
                else:
                    results[way] = bench.per_trial()
                secs = sum(results[way][0].values())
                total[way] += secs
                for k, v in results[way][0].items():
                    parts[way][k] += v
                print(f"gamma {p.gamma:g}: {way} {secs:.1f} s {results[way][0]}", flush=True)
            a, b = results["cached"][1], results["per_trial"][1]
            for u in bench.units:
                agree.setdefault(u.head, []).append(float((a[u.key] == b[u.key]).float().mean()))
            n_units = len(bench.units)
            stds.append(bench.feature_std)
            rows.append(
                [
                    f"gamma {p.gamma:g} ({len(bench.index)} train / {len(bench.test_index)} test images, {n_units} trials)",
                    f"{sum(results['cached'][0].values()):.2f}",
                    f"{sum(results['per_trial'][0].values()):.2f}",
                    f"{sum(results['per_trial'][0].values()) / sum(results['cached'][0].values()):.1f}x",
                ]
            )
    n = len(plan.finetunes)
    rows.append(
        [
            f"**all {n} trials**",
            f"**{total['cached']:.2f}**",
            f"**{total['per_trial']:.2f}**",
            f"**{total['per_trial'] / total['cached']:.1f}x**",
        ]
    )
    header = "| fine-tune stage | cached features (ltsweep), s | re-encode per trial, s | ratio |"
    lines = [header, "|---|---|---|---|"] + ["| " + " | ".join(r) + " |" for r in rows]
    c, r = parts["cached"], parts["per_trial"]
    load_end = os.getloadavg()
    body = "\n\n".join(
        [
            "## Fine-tune stage: cached features vs re-encoding per trial",
            f"Command: `{shlex.join(['python', *sys.argv])}`  \n"
            f"Date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}; "
            f"torch {torch.__version__}, ray {metadata.version('ray')}, Python {platform.python_version()}; "
            f"os.cpu_count() = {os.cpu_count()}; torch threads {threads}  \n"
            f"Load average (1/5/15 min): start {'/'.join(f'{x:.2f}' for x in load_start)}, "
            f"end {'/'.join(f'{x:.2f}' for x in load_end)}",
            f"Sweep `{args.sweep}` ({sweep.data.dataset} {sweep.data.image_size}x{sweep.data.image_size}, "
            f"{sweep.backbone.arch} width {sweep.backbone.width}, {len(plan.pretrains)} pre-trains x "
            f"{n // len(plan.pretrains)} fine-tunes, fine-tune epochs {plan.finetunes[0].epochs}). "
            "Encoder randomly initialised: pre-training is not timed.",
            "\n".join(lines),
            f"Breakdown, cached: encode {c['encode']:.2f} s (once per pre-train), cache save + verify + "
            f"load {c['store']:.2f} s, stacked training {c['train']:.2f} s. Per trial: encode "
            f"{r['encode']:.2f} s ({r['encode'] / n:.3f} s per trial), `train_reference` {r['train']:.2f} s "
            f"({r['train'] / n:.3f} s per trial). Test predictions of the two ways agree on "
            + ", ".join(f"{np.mean(v):.1%} (head {k}, {len(v)} trials)" for k, v in agree.items())
            + f". With a random encoder the features are tiny (std {np.mean(stds):.2g} per dimension), so in "
            "the full head BatchNorm amplifies the rounding differences of stacked vs plain "
            "matmuls over the epochs; the frozen-block head (last) is unaffected.",
        ]
    )
    publish(SECTION, body, write=not args.no_fragment)


if __name__ == "__main__":
    main()
