"""kNN accuracy against pre-training epochs, per SSL method and precision: the figure and table
of `analysis/results/knn-curves/`.

Reads the JSON lines `benchmarks/bench_precision_accuracy.py --knn-every K --out F` appends
(one line per pre-train run, with its `knn_history`) and writes `knn_curves.png`, `index.md`
(the table, the commands' settings, wall-clock seconds and load) and `runs.jsonl` (the input
rows, so the folder is self-contained):

    python analysis/knn_curves.py RUNS.jsonl [MORE.jsonl ...] --out analysis/results/knn-curves

Baselines drawn as horizontal lines, when given: `--random PCT` (a randomly initialised
encoder of the same width) and `--pixels PCT` (kNN on raw pixels), both measured elsewhere on
the same subset and named in the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAMES = {"simsiam": "SimSiam", "simclr": "SimCLR", "byol": "BYOL", "barlow": "Barlow Twins"}


def load(paths: list[Path]) -> list[dict]:
    rows = [json.loads(line) for p in paths for line in p.read_text().splitlines() if line]
    return sorted(rows, key=lambda r: (r["method"], r["precision"] != "bf16", r["seed"]))


def label(r: dict, width: int) -> str:
    """The run's name; its width and threads too when they differ from the title's `width`."""
    name = f"{NAMES.get(r['method'], r['method'])} {r['precision']} seed {r['seed']}"
    return name if r["width"] == width else f"{name}, width {r['width']}, {r['threads']} threads"


def plot(rows: list[dict], out: Path, random: float | None, pixels: float | None) -> None:
    fig, ax = plt.subplots(figsize=(9.5, 4.5), dpi=120)
    for r in rows:
        epochs, acc = zip(*r["knn_history"], strict=True)
        style = "-" if r["precision"] == "bf16" else "--"
        ax.plot(
            epochs,
            [100 * a for a in acc],
            style,
            marker="o",
            ms=3,
            label=label(r, rows[0]["width"]),
        )
    if random is not None:
        ax.axhline(random, color="grey", lw=1, ls=":", label=f"random init ({random:.1f} %)")
    if pixels is not None:
        ax.axhline(pixels, color="black", lw=1, ls=":", label=f"raw pixels ({pixels:.1f} %)")
    r0 = rows[0]
    ax.set_xlabel("pre-training epoch")
    ax.set_ylabel("kNN accuracy (%), balanced test set")
    ax.set_title(
        f"CIFAR-10-LT (gamma {r0['gamma']:g}, {r0['n_train']:,} images), ResNet18 width "
        f"{r0['width']}, batch {r0['batch']}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def table(rows: list[dict], random: float | None, pixels: float | None) -> str:
    epochs = sorted({e for r in rows for e, _ in r["knn_history"]})
    head = "| run | " + " | ".join(str(e) for e in epochs) + " | seconds | load avg (end) |"
    lines = [head, "| --- |" + " ---: |" * (len(epochs) + 1) + " --- |"]
    for r in rows:
        at = dict((e, a) for e, a in r["knn_history"])
        cells = [f"{100 * at[e]:.2f}" if e in at else "" for e in epochs]
        load = "/".join(f"{x:.1f}" for x in r["load"])
        lines.append(
            f"| {label(r, rows[0]['width'])} | "
            + " | ".join(cells)
            + f" | {r['seconds']:.0f} | {load} |"
        )
    notes = []
    if random is not None:
        notes.append(f"random-init encoder {random:.1f} %")
    if pixels is not None:
        notes.append(f"raw pixels {pixels:.1f} %")
    scale = "\n\nFor scale (measured on the same subset, given with --random / --pixels): "
    return "\n".join(lines) + (scale + ", ".join(notes) + "." if notes else "")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--out", type=Path, default=Path("analysis/results/knn-curves"))
    p.add_argument("--random", type=float, default=None)
    p.add_argument("--pixels", type=float, default=None)
    p.add_argument("--notes", type=Path, default=None, help="markdown appended to index.md")
    args = p.parse_args(argv)
    rows = load(args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out / "knn_curves.png", args.random, args.pixels)
    (args.out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r0 = rows[0]
    text = f"""# kNN accuracy against pre-training epochs

Real CIFAR-10 made long-tailed (gamma {r0["gamma"]:g}, data seed 0: {r0["n_train"]:,} images),
ResNet18 width {r0["width"]}, each method's paper settings except epochs {r0["epochs"]}, batch
{r0["batch"]} and warm-up {r0.get("warmup_epochs", 0)} epochs; kNN (k 200) on the balanced
{r0["n_test"]:,}-image test set with the training subset as the bank, every
{r0["knn_history"][0][0]} epochs. One torch thread per run, two runs side by side on the 2-core
machine. Made by
`python benchmarks/bench_precision_accuracy.py --root DIR --method M --precision P --seeds S
--epochs {r0["epochs"]} --batch {r0["batch"]} --warmup-epochs {r0.get("warmup_epochs", 0)}
--knn-every {r0["knn_history"][0][0]} --threads 1 --out F`, then
`python analysis/knn_curves.py F... --out analysis/results/knn-curves`.

![kNN accuracy against epochs](knn_curves.png)

kNN accuracy (%) after each measured epoch:

{table(rows, args.random, args.pixels)}
"""
    if args.notes is not None:
        text += "\n" + args.notes.read_text()
    (args.out / "index.md").write_text(text)
    print(f"wrote {args.out / 'index.md'}, {args.out / 'knn_curves.png'}")


if __name__ == "__main__":
    main()
