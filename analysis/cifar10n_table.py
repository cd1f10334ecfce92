"""Two-stage training on the real human labels of CIFAR-10N, made long-tailed: the table,
figure and results file of `analysis/results/cifar10n-cpu/`.

Each label set (aggre, random1, worse) is its own run, since a sweep reads one array of the
label file (`data.noisy_labels.key`); the rows do not say which one, so the label set is
read from each run's own copy of its sweep (`<run>/sweep.yaml`). With `--symmetric RUN`, the
two-stage rows of a run with symmetric noise on the same encoder are drawn as lines, and
each CIFAR-10N label set as points at its measured noise rate: where human noise is harder
or easier than symmetric noise at the same rate shows as points under or over the lines.

    python analysis/cifar10n_table.py runs/cifar10n-cpu-aggre runs/cifar10n-cpu-random1 \\
        runs/cifar10n-cpu-worse --symmetric runs/cifar10-cpu --out analysis/results/cifar10n-cpu

Writes `index.md` (tables, the paper's claims checked on these rows, commands, seconds),
`cifar10n.png` and `results.parquet` (every row of the CIFAR-10N runs, with a `labels`
column). The run folders do not travel with the repository; their rows do, and the page is
rebuilt from them with

    python analysis/cifar10n_table.py --results analysis/results/cifar10n-cpu/results.parquet \\
        --symmetric-results analysis/results/cifar10-cpu/results.parquet \\
        --notes analysis/results/cifar10n-cpu/notes.md --out analysis/results/cifar10n-cpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import pandas as pd
import yaml

import ltsweep
from ltsweep.report.claims import CLAIMS_METHOD, claims_table, verdicts
from ltsweep.report.document import md_table

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LOSSES = ["ce", "ce+sl", "la", "la+sl"]
LOSS_NAMES = {"ce": "CE", "ce+sl": "CE+SL", "la": "LA", "la+sl": "LA+SL"}
#: the report's colour per loss (analysis/README.md), so the two figures read alike
COLOURS = {"ce": "tab:blue", "ce+sl": "tab:orange", "la": "tab:green", "la+sl": "tab:red"}
#: a label array's name -> the name CIFAR-10N's authors give the label set
LABEL_SETS = {"aggre_label": "aggre", "random_label1": "random1", "worse_label": "worse"}


def labels_of(run: Path) -> str:
    """The label set a run trained on, from its own copy of its sweep."""
    sweep = yaml.safe_load((run / "sweep.yaml").read_text())
    key = ((sweep.get("data") or {}).get("noisy_labels") or {}).get("key")
    if key is None:
        raise SystemExit(f"{run}: not a CIFAR-N run (its sweep.yaml has no data.noisy_labels)")
    return LABEL_SETS.get(key, key)


def load(runs: list[Path]) -> pd.DataFrame:
    frames = []
    for run in runs:
        df = ltsweep.load_results(run)
        if df.empty:
            raise SystemExit(f"{run}: no results")
        frames.append(df.assign(labels=labels_of(run)))
    return pd.concat(frames, ignore_index=True)


def pct(x: float) -> str:
    return "-" if pd.isna(x) else f"{100 * x:.1f}"


def main_table(df: pd.DataFrame) -> list[str]:
    two = df[df.stage == "two-stage"]
    order = [s for s in LABEL_SETS.values() if s in set(two.labels)]
    lines = [
        "| labels | noise (measured) | head | loss | acc | many | medium | few |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for labels in order:
        for loss in LOSSES:
            for _, r in two[(two.labels == labels) & (two.loss == loss)].iterrows():
                lines.append(
                    f"| {labels} | {pct(r['actual_noise'])} % | {r['head']} | {LOSS_NAMES[loss]} | "
                    f"{pct(r['acc'])} | {pct(r['acc_many'])} | {pct(r['acc_medium'])} | "
                    f"{pct(r['acc_few'])} |"
                )
    return lines


def symmetric_table(sym: pd.DataFrame) -> list[str]:
    two = sym[sym.stage == "two-stage"]
    noises = sorted(set(two.noise))
    lines = [
        "| loss | " + " | ".join(f"{100 * n:.0f} %" for n in noises) + " |",
        "| --- |" + " ---: |" * len(noises),
    ]
    for loss in LOSSES:
        cells = [two[(two.loss == loss) & (two.noise == n)].acc.mean() for n in noises]
        lines.append(f"| {LOSS_NAMES[loss]} | " + " | ".join(pct(c) for c in cells) + " |")
    return lines


def plot(df: pd.DataFrame, sym: pd.DataFrame | None, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.6), dpi=120)
    two = df[df.stage == "two-stage"]
    if sym is not None:
        s = sym[sym.stage == "two-stage"]
        for loss in LOSSES:
            cur = s[s.loss == loss].groupby("actual_noise").acc.mean()
            ax.plot(100 * cur.index, 100 * cur.values, "-", color=COLOURS[loss], alpha=0.6)
    markers = {"aggre": "o", "random1": "s", "worse": "^"}
    for loss in LOSSES:
        for labels, marker in markers.items():
            r = two[(two.loss == loss) & (two.labels == labels)]
            if len(r):
                ax.plot(
                    100 * r.actual_noise, 100 * r.acc, marker, color=COLOURS[loss], markersize=8
                )
    handles = [plt.Line2D([], [], color=COLOURS[x], label=LOSS_NAMES[x]) for x in LOSSES]
    handles += [
        plt.Line2D([], [], color="grey", marker=m, linestyle="", label=f"CIFAR-10N {labels}")
        for labels, m in markers.items()
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4)
    ax.set_xlabel("noise rate of the long-tailed training labels (%)")
    ax.set_ylabel("balanced test accuracy (%)")
    ax.set_title(
        "Two-stage on CIFAR-10-LT (gamma 100): lines symmetric noise, points CIFAR-10N",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "cifar10n.png")
    plt.close(fig)


def claims_section(df: pd.DataFrame) -> list[str]:
    """The paper's claims checked on these rows (`ltsweep.report.claims`), as in `ltsweep report`."""
    return [
        "## Claims of the paper",
        "",
        CLAIMS_METHOD + " Noise levels are the rates measured on each label set.",
        "",
        md_table(claims_table(verdicts(df.drop(columns="labels")))),
        "",
    ]


def commands(sweeps: list[str], symmetric: str | None, out: Path) -> list[str]:
    """The commands that made the runs and this page, by sweep name."""
    return [
        *(f"LTSWEEP_DATA=data ltsweep run sweeps/{name}.yaml" for name in sweeps),
        "python analysis/cifar10n_table.py "
        + " ".join(f"runs/{name}" for name in sweeps)
        + (f" --symmetric runs/{symmetric}" if symmetric else "")
        + f" --out {out.as_posix()}",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", type=Path, help="run folders of CIFAR-10N sweeps")
    ap.add_argument("--symmetric", type=Path, help="a run with symmetric noise, same encoder")
    ap.add_argument("--results", type=Path, help="instead of runs: their stored rows (parquet)")
    ap.add_argument("--symmetric-results", type=Path, help="instead of --symmetric: its rows")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--notes", type=Path, help="how it was made and findings, appended")
    args = ap.parse_args(argv)
    if bool(args.runs) == bool(args.results):
        ap.error("give the CIFAR-10N run folders or --results, not both")
    df = pd.read_parquet(args.results) if args.results else load(args.runs)
    if args.symmetric_results:
        sym = pd.read_parquet(args.symmetric_results)
    else:
        sym = ltsweep.load_results(args.symmetric) if args.symmetric else None
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.results:
        df.to_parquet(args.out / "results.parquet", index=False)
    plot(df, sym, args.out)
    two = df[df.stage == "two-stage"]
    knn = two.knn_acc.dropna()
    text = [
        "# Two-stage training on long-tailed CIFAR-10N",
        "",
        "The real human labels of CIFAR-10N (Wei et al., 2022) on the long-tailed CIFAR-10 "
        f"subset (gamma {', '.join(f'{g:g}' for g in sorted(set(df.gamma)))}, "
        f"{int(two.n_train.iloc[0]):,} training images), fine-tuned on one frozen encoder "
        f"({', '.join(sorted(set(two.method)))}, {int(two.pretrain_epochs.max())} pre-training "
        f"epochs, kNN {pct(knn.iloc[0]) + ' %' if len(knn) else 'not measured'}). Accuracy (%) "
        "on the balanced clean test set; many / medium / few: classes with > 100, 20-100, "
        "< 20 training images (gamma 100 has none under 20: few is '-'). The noise rate is "
        "measured on the long-tailed subset; head: `auto`, i.e. the last FC only above "
        "the method's `last_layer_above` (Barlow Twins: 20 %).",
        "",
        *main_table(df),
        "",
        "![accuracy against the labels' noise rate](cifar10n.png)",
        "",
    ]
    sym_name = str(sym["sweep"].iloc[0]) if sym is not None else None
    if sym is not None:
        text += [
            f"Symmetric noise on the same encoder (`{sym_name}`), two-stage, "
            "accuracy (%) by noise rate:",
            "",
            *symmetric_table(sym),
            "",
        ]
    sweeps = list(dict.fromkeys(df["sweep"]))
    text += claims_section(df)
    text += [
        "## How it was made",
        "",
        "```",
        *commands(sweeps, sym_name, args.out),
        "```",
        "",
        "Each sweep shares the `--cache-dir` of the symmetric-noise sweep, whose pre-train and "
        "frozen features it reuses: what is new is the fine-tunes.",
        "`results.parquet` holds every row, with the label set in the `labels` column:",
        "`pandas.read_parquet('analysis/results/cifar10n-cpu/results.parquet')`.",
        "",
    ]
    if args.notes:
        text += [args.notes.read_text().rstrip(), ""]
    (args.out / "index.md").write_text("\n".join(text))
    print(f"wrote {args.out / 'index.md'}, cifar10n.png, results.parquet ({len(df)} rows)")


if __name__ == "__main__":
    main()
