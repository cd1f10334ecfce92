"""The results table as `ltsweep results` shows it: one metric, mean +/- std and n per cell.

Rows are (stage, method, gamma, loss), columns the noise levels, each cell the mean over the
seeds it holds, with their standard deviation and count (`61.2 +/- 1.3 (3)`; no +/- for a
single seed). `--where column=value` filters first; `--format` writes a terminal table, CSV,
Markdown or LaTeX. Needs pandas only (no torch, no plotting). Rows trained on real noisy
labels (CIFAR-N) sit in the column of the noise rate measured on their labels.
"""

from __future__ import annotations

import math
import os

from ltsweep.store.results import load_results, measured_noise

#: metrics a user can ask for, and how each is shown
METRICS = {
    "acc": "accuracy (%)",
    "acc_many": "many-shot accuracy (%)",
    "acc_medium": "medium-shot accuracy (%)",
    "acc_few": "few-shot accuracy (%)",
    "knn_acc": "kNN accuracy of the encoder (%)",
    "clean_precision": "DivideMix: precision of the samples judged clean (%)",
}
FORMATS = ("table", "csv", "markdown", "latex")
ROWS = ["stage", "method", "gamma", "loss"]


class ViewError(ValueError):
    """A `--metric` or `--where` that the table cannot answer (one line, names the option)."""


def parse_where(items: list[str]) -> list[tuple[str, str]]:
    """`["method=simsiam", "gamma=10"]` as (column, value) pairs."""
    pairs = []
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise ViewError(f"--where {item!r}: write it as COLUMN=VALUE, e.g. method=simsiam")
        pairs.append((column.strip(), value.strip()))
    return pairs


def _matches(series, value: str):
    if series.dtype.kind in "fiu":
        try:
            return (series - float(value)).abs() < 1e-9
        except ValueError:
            raise ViewError(f"--where {series.name}={value}: {series.name} is a number") from None
    return series.astype(str) == value


def cells(df, metric: str = "acc", where: list[tuple[str, str]] = ()):
    """(mean, std, n) of `metric` in % per (stage, method, gamma, loss) x noise."""
    if metric not in METRICS:
        raise ViewError(f"--metric {metric!r}: one of {', '.join(METRICS)}")
    for column, value in where:
        if column not in df.columns:
            raise ViewError(f"--where {column}={value}: no column {column!r} in the results")
        df = df[_matches(df[column], value)]
    df = measured_noise(df[df[metric].notna()])
    grouped = (df[metric] * 100).groupby([df[c] for c in [*ROWS, "noise"]])
    stats = grouped.agg(["mean", "std", "count"])
    return stats.unstack("noise") if len(stats) else stats


def _cell(mean: float, std: float, n: float, single: bool) -> str:
    """`61.2 +/- 1.3 (3)`; `61.2 (1)` for one seed; `61.2` when every cell has one seed."""
    if n is None or math.isnan(n) or n == 0:
        return ""
    if single:
        return f"{mean:.1f}"
    if n == 1 or math.isnan(std):
        return f"{mean:.1f} (1)"
    return f"{mean:.1f} +/- {std:.1f} ({int(n)})"


def one_seed_each(stats) -> bool:
    counts = stats["count"].to_numpy()
    return bool(((counts == 1) | (counts != counts)).all())


def text_table(stats) -> tuple[list[str], list[list[str]]]:
    """Header and rows of strings: the row keys, then one `mean +/- std (n)` per noise."""
    noises = sorted({n for _, n in stats.columns})
    header = [*ROWS, *(f"{n:.0%}" if round(n * 100, 6) % 1 == 0 else f"{n:.1%}" for n in noises)]
    single = one_seed_each(stats)
    rows = []
    for key, rec in stats.iterrows():
        values = [
            _cell(rec[("mean", n)], rec[("std", n)], rec[("count", n)], single) for n in noises
        ]
        rows.append([*(f"{k:g}" if isinstance(k, float) else str(k) for k in key), *values])
    return header, rows


def render(header: list[str], rows: list[list[str]], fmt: str) -> str:
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([header, *rows])
        return buf.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    if fmt == "latex":

        def tex(s: str) -> str:
            return s.replace("%", r"\%").replace("+/-", r"$\pm$").replace("_", r"\_")

        spec = "l" * len(ROWS) + "r" * (len(header) - len(ROWS))
        body = [" & ".join(tex(c) for c in r) + r" \\" for r in rows]
        return "\n".join(
            [
                rf"\begin{{tabular}}{{{spec}}}",
                r"\toprule",
                " & ".join(map(tex, header)) + r" \\",
                r"\midrule",
                *body,
                r"\bottomrule",
                r"\end{tabular}",
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join
    out = [
        line(
            h.ljust(w) if i < len(ROWS) else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    for r in rows:
        out.append(
            line(
                c.ljust(w) if i < len(ROWS) else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(out)


def results_text(
    run_dir: str | os.PathLike[str],
    metric: str = "acc",
    where: list[str] | None = None,
    fmt: str = "table",
) -> str:
    """What `ltsweep results` prints."""
    if fmt not in FORMATS:
        raise ViewError(f"--format {fmt!r}: one of {', '.join(FORMATS)}")
    filters = parse_where(where or [])
    df = load_results(run_dir)
    if df.empty:
        return f"no results stored in {run_dir} yet"
    stats = cells(df, metric, filters)
    if not len(stats):
        shown = " and ".join(f"{c}={v}" for c, v in filters) or "these results"
        return f"no {metric} values for {shown} in {run_dir}"
    header, rows = text_table(stats)
    table = render(header, rows, fmt)
    if fmt != "table":
        return table
    cells_are = "one seed each" if one_seed_each(stats) else "mean +/- std (seeds)"
    return f"{METRICS[metric]} on the balanced clean test set, {cells_are}, by noise\n{table}"
