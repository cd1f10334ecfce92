"""The report's tables: a figure's plotted numbers, the accuracy pivot, the paper comparison,
and the summary lines, as display DataFrames (cells "mean ± std", labels as the paper writes them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ltsweep.report import figures as F

STAGE_ORDER = ("two-stage", "single-stage")


def _cell(mean: float, std: float, n: int, signed: bool = False) -> str:
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return fmt.format(mean) + (f" ± {std:.1f}" if n > 1 else "")


def _rank(values: pd.Series, order: Iterable[Any]) -> pd.Series:
    pos = {v: i for i, v in enumerate(order)}
    return values.map(lambda v: pos.get(v, len(pos)))


def _wide(
    data: pd.DataFrame, index: list[str], column: str = "noise", signed: bool = False
) -> pd.DataFrame:
    """Tidy mean/std/n rows -> one row per `index` tuple, one column per `column` value."""
    d = data.copy()
    d["cell"] = [
        _cell(m, s, n, signed) for m, s, n in zip(d["mean"], d["std"], d["n"], strict=True)
    ]
    ranks = []
    for c in index:
        if c == "stage":
            d["_r_" + c] = _rank(d[c], STAGE_ORDER)
        elif c == "method":
            d["_r_" + c] = _rank(d[c], (*F.SSL_ORDER, *F.BASELINE_ORDER))
        elif c == "loss":
            d["_r_" + c] = _rank(d[c], F.LOSS_ORDER)
        else:
            d["_r_" + c] = d[c]
        ranks.append("_r_" + c)
    d = d.sort_values([*ranks, column])
    keys = pd.MultiIndex.from_frame(d[index].drop_duplicates())
    wide = d.set_index([*index, column])["cell"].unstack(column).reindex(keys)
    if column == "noise":
        wide.columns = [f"{F.fmt_num(round(float(x) * 100, 6))}%" for x in wide.columns]
    else:
        wide.columns = [F.fmt_num(x) for x in wide.columns]
    wide = wide.reset_index()
    for c in index:
        if c == "gamma":
            wide[c] = [F.fmt_num(x) for x in wide[c]]
        elif c == "dataset":
            wide[c] = [F.dataset_label(x) for x in wide[c]]
        elif c in ("method", "loss"):
            wide[c] = [F.label(x) for x in wide[c]]
    return wide.fillna("")


def figure_table(name: str, fig: Figure) -> pd.DataFrame:
    data: pd.DataFrame = fig.ltsweep_data  # type: ignore[attr-defined]
    if name == "fig3_loss_gain":
        out = _wide(data, ["dataset", "method", "loss"], signed=True)
        return out
    if name in ("fig4_two_vs_single_stage", "fig5_methods_vs_noise"):
        index = ["dataset", "gamma", "stage", "method"] + (["loss"] if "loss" in data else [])
        return _wide(data, index)
    if name == "fig6_pretrain_epochs":
        out = _wide(data, ["metric", "gamma"], column="pretrain_epochs")
        out.columns = [c if i < 2 else f"{c} ep." for i, c in enumerate(out.columns)]
        return out
    if name == "fig_pretrain_curves":
        rows = []
        for (ds, m, g), cell in data.groupby(["dataset", "method", "gamma"], sort=False):
            row = {"dataset": F.dataset_label(ds), "method": F.label(m), "gamma": F.fmt_num(g)}
            for metric, head, fmt in (("loss", "loss", "{:.3f}"), ("knn_acc", "kNN %", "{:.1f}")):
                sub = cell[cell["metric"] == metric].sort_values("epoch")
                if not sub.empty:
                    row[f"{head} at epoch {int(sub['epoch'].iloc[0])}"] = fmt.format(
                        sub["mean"].iloc[0]
                    )
                    row[f"{head} last"] = fmt.format(sub["mean"].iloc[-1])
            row["epochs"] = int(cell["epoch"].max())
            rows.append(row)
        return pd.DataFrame(rows).fillna("")
    if name.startswith("fig78_tsne"):
        s = fig.ltsweep_summary.copy()  # type: ignore[attr-defined]
        s["gamma"] = [F.fmt_num(g) for g in s["gamma"]]
        s["knn2d_acc"] = [f"{100 * v:.1f}%" for v in s["knn2d_acc"]]
        return s.rename(columns={"knn2d_acc": "5-NN acc. on the 2-D map"})
    return data


def pivot_tables(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Accuracy (%) by (stage, method, gamma, loss) x noise, one table per dataset."""
    rows = F.final_encoders(F.measured_noise(df))
    out = []
    for ds in F.ordered(rows["dataset"].tolist(), ("cifar10", "cifar100", "clothing1m")):
        sub = rows[rows["dataset"] == ds].copy()
        sub["loss"] = sub["loss"].fillna("")
        data = F.summarize(sub, ["stage", "method", "gamma", "loss", "noise"])
        out.append((ds, _wide(data, ["stage", "method", "gamma", "loss"])))
    return out


def comparison_table(cmp: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "dataset": [F.dataset_label(x) for x in cmp["dataset"]],
            "gamma": [F.fmt_num(x) for x in cmp["gamma"]],
            "noise": [f"{F.fmt_num(round(100 * x, 6))}%" for x in cmp["noise"]],
            "stage": cmp["stage"],
            "method": [F.label(x) for x in cmp["method"]],
            "loss": [F.label(x) if x else "" for x in cmp["loss"]],
            "paper": cmp["paper"],
            "ours": [f"{x:.1f}" for x in cmp["ours"]],
            "diff": [f"{x:+.1f}" for x in cmp["diff"]],
            "holds": [
                "" if h is None or pd.isna(h) else ("yes" if h else "no") for h in cmp["holds"]
            ],
            "n": cmp["n"],
            "note": cmp["note"],
        }
    )
    return out


def summary_lines(df: pd.DataFrame, n_failed: int) -> list[str]:
    out = [
        f"result rows: {len(df)}" + (f" ({n_failed} failed units not shown)" if n_failed else "")
    ]
    real = df["noise_type"].eq("cifar-n") if "noise_type" in df.columns else None
    df = F.measured_noise(df)
    for ds in F.ordered(df["dataset"].tolist(), ("cifar10", "cifar100", "clothing1m")):
        sub = df[df["dataset"] == ds]
        gammas = ", ".join(F.fmt_num(g) for g in sorted(sub["gamma"].unique()))
        noises = ", ".join(F.fmt_num(round(100 * x, 6)) for x in sorted(sub["noise"].unique()))
        out.append(f"{F.dataset_label(ds)}: {len(sub)} rows; gamma {gammas}; noise {noises} %")
    if real is not None and real.any():
        out.append(
            "real noisy labels (CIFAR-N): each row's noise is the rate measured on its "
            "training labels"
        )
    two = df[df["stage"] == "two-stage"]
    one = df[df["stage"] == "single-stage"]
    if not two.empty:
        meths = F.ordered(two["method"].tolist(), F.SSL_ORDER)
        losses = F.ordered(two["loss"].tolist(), F.LOSS_ORDER)
        epochs = ", ".join(str(int(e)) for e in sorted(two["pretrain_epochs"].unique()))
        heads = ", ".join(sorted(str(h) for h in two["head"].unique()))
        out.append(
            "two-stage: "
            + ", ".join(F.label(m) for m in meths)
            + "; losses "
            + ", ".join(F.label(x) for x in losses)
            + f"; heads {heads}; pre-training epochs {epochs}"
        )
    if not one.empty:
        base = F.ordered(one["method"].tolist(), F.BASELINE_ORDER)
        out.append("single-stage baselines: " + ", ".join(F.label(b) for b in base))
    seeds = ", ".join(str(int(s)) for s in sorted(df["seed"].unique()))
    dseeds = ", ".join(str(int(s)) for s in sorted(df["data_seed"].unique()))
    out.append(f"seeds {seeds}; data seeds {dseeds} (error bars: std over both)")
    if not two.empty and two["pretrain_epochs"].nunique() > 1:
        out.append(
            "Figures 3-5, Table 1, the pivot and the paper comparison use the longest "
            "pre-training of each encoder; Fig. 6 uses every epoch"
        )
    return out
