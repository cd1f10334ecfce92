"""Does bf16 pre-training cost accuracy? kNN accuracy after the same epochs, bf16 vs fp32.

Real CIFAR-10-LT (gamma 100, data seed 0: 12,406 images), a width-16 ResNet18, the method's
paper settings except epochs / batch / warm-up (given here), the shared loop
(`ltsweep.train.selfsup.loop.pretrain`) with an explicit `Speed`. kNN (k = 200) on the
balanced 10,000-image test set with the training subset as the bank, after the last epoch.
fp32's own run-to-run spread is measured with a second seed (the initialisation, the data
order and the augmentation all follow the seed).

    python benchmarks/bench_precision_accuracy.py --root DIR --precision fp32 --seeds 0 1 --out a.jsonl
    python benchmarks/bench_precision_accuracy.py --root DIR --precision bf16 --seeds 0 1 --out b.jsonl
    python benchmarks/bench_precision_accuracy.py --summarise a.jsonl b.jsonl [--write]

One JSON line per run (precision, seed, knn, seconds, load average); `--summarise` prints (and
with `--write` stores in RESULTS.md) the table. `--root`: CIFAR-10 in its standard layout
(`python ../shared/data/cifar10/build_layout.py DIR`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from results_md import publish

from ltsweep.data.base import ArrayImageSet
from ltsweep.data.cifar import load_cifar
from ltsweep.data.imbalance import long_tail_indices
from ltsweep.device import Speed
from ltsweep.models.resnet import build_encoder
from ltsweep.sweep.ssl_settings import SSL_SETTINGS
from ltsweep.train.selfsup.base import build_method
from ltsweep.train.selfsup.loop import Batches, pretrain

SPEEDS = {"fp32": Speed(), "bf16": Speed("bf16", "channels_last")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", type=Path)
    p.add_argument("--method", default="simclr", choices=list(SSL_SETTINGS))
    p.add_argument("--precision", choices=list(SPEEDS), default="fp32")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--gamma", type=float, default=100.0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup-epochs", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--knn-every",
        type=int,
        default=None,
        help="also measure kNN every k epochs (a kNN-vs-epochs curve; default: last epoch only)",
    )
    p.add_argument(
        "--keep-every",
        type=int,
        default=1,
        help="keep every k-th image of each class of the long-tailed subset (the ratio gamma "
        "stays; 5: 2,482 images): a reduced run",
    )
    p.add_argument(
        "--test-per-class", type=int, default=None, help="kNN on the first n test images per class"
    )
    p.add_argument("--out", type=Path, help="append one JSON line per run")
    p.add_argument("--summarise", type=Path, nargs="+", help="JSON-lines files to tabulate")
    p.add_argument("--write", action="store_true")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    data = load_cifar("cifar10", args.root)
    index = long_tail_indices(data.train.labels, data.num_classes, args.gamma, 0)
    labels = data.train.labels[index]
    index = np.concatenate(
        [index[labels == c][:: args.keep_every] for c in range(data.num_classes)]
    )
    test = data.test
    if args.test_per_class:
        tl = np.asarray(test.labels)
        keep = np.concatenate(
            [np.flatnonzero(tl == c)[: args.test_per_class] for c in range(data.num_classes)]
        )
        test = ArrayImageSet(np.asarray(test.images(keep)), tl[keep])
    batches = Batches(data.train, index, test, data.num_classes, data.mean, data.std)
    settings = SSL_SETTINGS[args.method](
        epochs=args.epochs,
        batch_size=args.batch,
        warmup_epochs=args.warmup_epochs,
        knn_every=args.knn_every or args.epochs,
        checkpoint_every=args.epochs,
    )
    for seed in args.seeds:
        torch.manual_seed(seed)
        method = build_method(args.method, build_encoder(width=args.width), settings)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            state = pretrain(
                method,
                batches,
                settings,
                torch.device("cpu"),
                Path(tmp),
                seed=seed,
                speed=SPEEDS[args.precision],
            )
        row = {
            "method": args.method,
            "width": args.width,
            "gamma": args.gamma,
            "n_train": len(index),
            "n_test": len(test),
            "keep_every": args.keep_every,
            "test_per_class": args.test_per_class,
            "epochs": args.epochs,
            "batch": args.batch,
            "precision": args.precision,
            "seed": seed,
            "knn": state.knn_history[-1][1],
            "knn_history": [list(x) for x in state.knn_history],
            "warmup_epochs": args.warmup_epochs,
            "loss": state.loss_history,
            "seconds": time.perf_counter() - t0,
            "threads": args.threads,
            "load": os.getloadavg(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        print(json.dumps(row), flush=True)
        if args.out:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


def summarise(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for p in args.summarise for line in p.read_text().splitlines()]
    rows.sort(key=lambda r: (r["precision"] != "fp32", r["seed"]))
    r0 = rows[0]
    lines = [
        "## bf16 pre-training: kNN accuracy against fp32\n",
        "Command: `python benchmarks/bench_precision_accuracy.py --root DIR --precision P "
        f"--seeds {' '.join(str(s) for s in sorted({r['seed'] for r in rows}))} "
        f"--epochs {r0['epochs']} --batch {r0['batch']} "
        f"--warmup-epochs {r0.get('warmup_epochs', 0)} --keep-every {r0.get('keep_every', 1)}"
        + (f" --knn-every {r0['knn_history'][0][0]}" if len(r0.get("knn_history", [])) > 1 else "")
        + (f" --test-per-class {r0['test_per_class']}" if r0.get("test_per_class") else "")
        + " --out P.jsonl` for P in fp32, bf16 (run side by side, "
        f"{r0['threads']} thread each), then `--summarise`  ",
        f"Real CIFAR-10-LT, gamma {r0['gamma']:g} ({r0['n_train']} images), {r0['method']}, "
        f"ResNet18 width {r0['width']}, batch {r0['batch']}, {r0['epochs']} epochs, kNN "
        f"(k 200) on {r0.get('n_test', 10000)} balanced test images after the last epoch.\n",
        "| precision | seed | kNN acc (%) | loss per epoch | seconds | finished | load avg |",
        "| --- | ---: | ---: | --- | ---: | --- | --- |",
    ]
    for r in rows:
        loss = ", ".join(f"{x:.3f}" for x in r["loss"])
        load = "/".join(f"{x:.1f}" for x in r["load"])
        lines.append(
            f"| {r['precision']} | {r['seed']} | {100 * r['knn']:.2f} | {loss} | "
            f"{r['seconds']:.0f} | {r['date']} | {load} |"
        )
    by: dict[str, dict[int, float]] = {}
    for r in rows:
        by.setdefault(r["precision"], {})[r["seed"]] = 100 * r["knn"]
    fp32, bf16 = by.get("fp32", {}), by.get("bf16", {})
    notes = []
    if len(fp32) >= 2:
        v = list(fp32.values())
        notes.append(f"fp32 run-to-run spread (seeds): {max(v) - min(v):.2f} points")
    same = sorted(set(fp32) & set(bf16))
    if same:
        d = [bf16[s] - fp32[s] for s in same]
        notes.append("bf16 - fp32, same seed: " + ", ".join(f"{x:+.2f}" for x in d) + " points")
    if fp32 and bf16:
        m32 = sum(fp32.values()) / len(fp32)
        m16 = sum(bf16.values()) / len(bf16)
        notes.append(f"means: fp32 {m32:.2f}, bf16 {m16:.2f} ({m16 - m32:+.2f} points)")
    body = "\n".join(lines) + "\n\n" + "; ".join(notes) + ".\n"
    curves = [r for r in rows if len(r.get("knn_history", [])) > 1]
    if curves:
        body += "\n" + curve_table(curves)
    publish("bench_precision_accuracy", body, args.write)


def curve_table(rows: list[dict]) -> str:
    """kNN after every measured epoch, one row per run, and fp32's seed spread beside bf16's
    difference from fp32 with the same seed."""
    epochs = sorted({e for r in rows for e, _ in r["knn_history"]})
    at = {(r["precision"], r["seed"]): dict(map(tuple, r["knn_history"])) for r in rows}
    lines = [
        "kNN accuracy (%) after each measured epoch (the same schedule for every run):\n",
        "| run | " + " | ".join(str(e) for e in epochs) + " |",
        "| --- |" + " ---: |" * len(epochs),
    ]
    for (prec, seed), h in sorted(at.items()):
        cells = [f"{100 * h[e]:.2f}" if e in h else "" for e in epochs]
        lines.append(f"| {prec} seed {seed} | " + " | ".join(cells) + " |")
    fp32 = [h for (p, _), h in at.items() if p == "fp32"]
    if len(fp32) >= 2:
        cells = [f"{100 * (max(h[e] for h in fp32) - min(h[e] for h in fp32)):.2f}" for e in epochs]
        lines.append("| fp32 spread over seeds | " + " | ".join(cells) + " |")
    for (prec, seed), h in sorted(at.items()):
        ref = at.get(("fp32", seed))
        if prec == "bf16" and ref is not None:
            cells = [f"{100 * (h[e] - ref[e]):+.2f}" for e in epochs]
            lines.append(f"| bf16 - fp32, seed {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.summarise:
        summarise(args)
    elif args.root is None:
        sys.exit("--root DIR (CIFAR-10 in its standard layout) is needed to run")
    else:
        run(args)


if __name__ == "__main__":
    main()
