"""Figs. 3-5 and Table 1: accuracy against noise, by fine-tuning loss, stage and method."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ltsweep.report.figures.base import (
    BASELINE_ORDER,
    DATASETS,
    LOSS_COLOURS,
    LOSS_ORDER,
    NOISE_AXIS,
    SINGLE_STAGE_LOSS,
    SSL_ORDER,
    attach,
    blank,
    dataset_label,
    error_bars,
    figure_legend,
    final_encoders,
    fmt_num,
    label,
    new_figure,
    noise_curves_only,
    noise_line,
    noise_panels,
    ok_rows,
    ordered,
    pct,
    single_stage_rows,
    summarize,
    two_stage_rows,
)


def fig3_loss_gain(
    df: pd.DataFrame,
    methods: Sequence[str] | None = None,
    losses: Sequence[str] = ("ce+sl", "la", "la+sl"),
    gammas: Sequence[float] | None = None,
) -> Figure:
    """Fig. 3: accuracy gain of each fine-tuning loss over CE, per SSL method and noise.

    The paper averages over the imbalanced ratios only (gamma > 1, the default; pass `gammas`
    to choose). The gain is computed per (gamma, seed, data seed) against the CE fine-tune of
    the same encoder and seed, averaged over gammas, then mean ± std over seeds: pairing by
    seed removes the encoder-to-encoder spread that both losses share. With complete seeds
    the mean equals mean(acc loss) - mean(acc CE). One panel per dataset (rows) x method
    (columns), bars grouped by noise. `ltsweep_data`: dataset, method, loss, noise, mean,
    std, n (gain in accuracy points), gammas.
    """
    ts = two_stage_rows(df)
    if ts.empty:
        raise ValueError("no two-stage rows: Fig. 3 compares fine-tuning losses of SSL encoders")
    if gammas is None:
        ts = ts[ts["gamma"] > 1]
        what = "gamma > 1"
    else:
        ts = ts[ts["gamma"].isin([float(g) for g in gammas])]
        what = f"gamma in {list(gammas)}"
    if methods is not None:
        ts = ts[ts["method"].isin(list(methods))]
    if ts.empty:
        raise ValueError(f"no two-stage rows with {what}")
    if "ce" not in set(ts["loss"]):
        raise ValueError(f"no two-stage CE rows with {what} to measure gains against")
    losses = [x for x in losses if x in set(ts["loss"]) and x != "ce"]
    if not losses:
        raise ValueError(f"no two-stage rows with a loss other than CE and {what}")

    keys = ["dataset", "method", "gamma", "noise", "seed", "data_seed"]
    per_seed = ts.groupby([*keys, "loss"])["acc"].mean().unstack("loss") * 100
    rows = []
    for loss in losses:
        gain = (per_seed[loss] - per_seed["ce"]).dropna().rename("gain").reset_index()
        gain["loss"] = loss
        rows.append(gain)
    gains = pd.concat(rows, ignore_index=True)
    if gains.empty:
        raise ValueError(f"no (seed, gamma) cell has both CE and another loss with {what}")
    # average over gammas within a seed, then mean ± std over seeds
    seed_keys = ["dataset", "method", "loss", "noise", "seed", "data_seed"]
    by_seed = gains.groupby(seed_keys)["gain"].mean().reset_index()
    data = summarize(by_seed, ["dataset", "method", "loss", "noise"], value="gain", scale=1.0)
    used = gains.groupby(["dataset", "method"])["gamma"].agg(
        lambda s: ", ".join(fmt_num(g) for g in sorted(s.unique()))
    )
    data["gammas"] = [used[(d, m)] for d, m in zip(data["dataset"], data["method"], strict=True)]

    datasets = ordered(data["dataset"].tolist(), tuple(DATASETS))
    meths = ordered(data["method"].tolist(), SSL_ORDER)
    n_noise = data["noise"].nunique()
    fig, axes = new_figure(len(datasets), len(meths), width=max(4.4, 1.5 + 0.45 * n_noise))
    for i, ds in enumerate(datasets):
        for j, m in enumerate(meths):
            ax = axes[i][j]
            cell = data[(data["dataset"] == ds) & (data["method"] == m)]
            if cell.empty:
                blank(ax)
                continue
            noises = sorted(cell["noise"].unique())
            x = np.arange(len(noises))
            width = 0.8 / len(losses)
            for k, loss in enumerate(losses):
                sub = cell[cell["loss"] == loss].set_index("noise").reindex(noises)
                ax.bar(
                    x + (k - (len(losses) - 1) / 2) * width,
                    sub["mean"].to_numpy(float),
                    width,
                    yerr=error_bars(sub.fillna({"n": 0})),
                    capsize=2,
                    color=LOSS_COLOURS.get(loss),
                    label=label(loss),
                )
            ax.axhline(0, color="0.3", linewidth=0.8)
            ax.set_xticks(x, [pct(n) for n in noises])
            ax.set_xlabel(NOISE_AXIS)
            ax.set_ylabel("accuracy gain over CE (points)")
            ax.set_title(
                f"{dataset_label(ds)}, {label(m)} (gamma {cell['gammas'].iloc[0]} averaged)",
                fontsize=10,
            )
    figure_legend(fig, axes)
    fig.suptitle("Fig. 3: gain of each fine-tuning loss over CE (two-stage)")
    return attach(fig, data)


# ---------------------------------------------------------------------------- Fig. 4


def fig4_two_vs_single_stage(
    df: pd.DataFrame,
    method: str | None = None,
    losses: Sequence[str] | None = None,
    gammas: Sequence[float] | None = None,
) -> Figure:
    """Fig. 4: accuracy vs noise of two-stage (one SSL method) and single-stage, per loss.

    Same colour = same loss, solid = two-stage with `method` (default BYOL as in the paper,
    else the first SSL method present), dashed = the single-stage baseline trained from
    scratch with that loss (SL alone pairs with CE+SL). This isolates what the
    self-supervised pre-training buys. One panel per dataset (rows) and gamma (columns);
    datasets with a single noise level are left out when others have several (listed in
    `fig.ltsweep_dropped`). `ltsweep_data`: dataset, gamma, stage, method, loss, noise,
    mean, std, n.
    """
    ts = two_stage_rows(df)
    ss = single_stage_rows(df)
    ss = ss[ss["method"].isin(list(SINGLE_STAGE_LOSS))].copy()
    if ts.empty:
        raise ValueError("no two-stage rows to compare with single-stage training")
    if ss.empty:
        raise ValueError("no single-stage CE/LA/SL/LA+SL rows to compare with")
    if method is None:
        present = set(ts["method"])
        method = "byol" if "byol" in present else ordered(list(present), SSL_ORDER)[0]
    ts = ts[ts["method"] == method]
    if ts.empty:
        raise ValueError(f"no two-stage rows with method {method!r}")
    ss["loss"] = ss["method"].map(SINGLE_STAGE_LOSS)
    if gammas is not None:
        ts = ts[ts["gamma"].isin([float(g) for g in gammas])]
        ss = ss[ss["gamma"].isin([float(g) for g in gammas])]
    if losses is None:
        losses = ordered(list(set(ts["loss"]) | set(ss["loss"])), LOSS_ORDER)
    ts = ts[ts["loss"].isin(list(losses))]
    ss = ss[ss["loss"].isin(list(losses))]
    # only the (dataset, gamma) panels where both stages have data
    both = set(zip(ts["dataset"], ts["gamma"], strict=True)) & set(
        zip(ss["dataset"], ss["gamma"], strict=True)
    )
    if not both:
        raise ValueError(f"no (dataset, gamma) has both two-stage {method} and single-stage rows")
    by = ["dataset", "gamma", "stage", "method", "loss", "noise"]
    data = summarize(pd.concat([ts, ss]), by)
    data = data[[(d, g) in both for d, g in zip(data["dataset"], data["gamma"], strict=True)]]
    data, dropped = noise_curves_only(data.reset_index(drop=True))

    def draw(ax: Axes, panel: pd.DataFrame) -> None:
        for loss in losses:
            two = panel[(panel["stage"] == "two-stage") & (panel["loss"] == loss)]
            one = panel[(panel["stage"] == "single-stage") & (panel["loss"] == loss)]
            if not two.empty:
                name = f"two-stage {label(method)}, {label(loss)}"
                noise_line(ax, two, "two-stage", name, method, loss)
            if not one.empty:
                base = one["method"].iloc[0]
                noise_line(ax, one, "single-stage", f"single-stage {label(base)}", base)

    title = f"Fig. 4: two-stage ({label(method)}) vs single-stage training, per loss"
    return noise_panels(data, draw, title, method=method, dropped=dropped)


# ---------------------------------------------------------------------------- Fig. 5


def fig5_methods_vs_noise(
    df: pd.DataFrame,
    loss: str = "la+sl",
    methods: Sequence[str] | None = None,
    baselines: Sequence[str] | None = None,
) -> Figure:
    """Fig. 5: accuracy vs noise of every SSL method (two-stage, fine-tuned with `loss`) and
    every single-stage baseline the run has (DivideMix, ELR+, ELR, CE, LA, SL, LA+SL, trained
    from scratch).

    Solid lines are SSL methods, dashed ones baselines; one panel per dataset (rows) and
    gamma (columns). Datasets with a single noise level (Clothing1M: see Table 1) are left
    out when others have several (`fig.ltsweep_dropped`). `ltsweep_data`: dataset, gamma,
    stage, method, noise, mean, std, n.
    """
    ts = two_stage_rows(df)
    ts = ts[ts["loss"] == loss]
    if methods is not None:
        ts = ts[ts["method"].isin(list(methods))]
    if ts.empty:
        raise ValueError(f"no two-stage rows fine-tuned with {loss!r}")
    ss = single_stage_rows(df)
    if baselines is not None:
        ss = ss[ss["method"].isin(list(baselines))]
    data = summarize(pd.concat([ts, ss]), ["dataset", "gamma", "stage", "method", "noise"])
    data, dropped = noise_curves_only(data)

    ssl = ordered(ts["method"].tolist(), SSL_ORDER)
    base = ordered(ss["method"].tolist(), BASELINE_ORDER)

    def draw(ax: Axes, panel: pd.DataFrame) -> None:
        for stage, names in (("two-stage", ssl), ("single-stage", base)):
            for m in names:
                sub = panel[(panel["stage"] == stage) & (panel["method"] == m)]
                if sub.empty:
                    continue
                two = stage == "two-stage"
                name = f"{label(m)} + {label(loss)}" if two else f"{label(m)} (single-stage)"
                noise_line(ax, sub, stage, name, m)

    title = f"Fig. 5: SSL methods (fine-tuned with {label(loss)}) and baselines vs noise"
    return noise_panels(data, draw, title, loss=loss, dropped=dropped)


# ---------------------------------------------------------------------------- Table 1


def table1_clothing1m(
    df: pd.DataFrame,
    dataset: str = "clothing1m",
    loss: str = "la+sl",
    noise: float = 0.0,
    with_std: bool = False,
) -> pd.DataFrame:
    """Table 1: accuracy (%) per method (rows) and gamma (columns) on Clothing1M.

    Clothing1M carries real label noise, so the paper adds none: rows with `noise` (default
    0) are used. Rows are the single-stage baselines (DivideMix, ELR, ... first, as in the
    paper) then each SSL method fine-tuned with `loss` ("SimSiam+LA+SL"). Values are means
    over seeds; `with_std=True` gives strings "mean ± std" instead.
    """
    rows = ok_rows(df)
    rows = rows[(rows["dataset"] == dataset) & np.isclose(rows["noise"].astype(float), noise)]
    if rows.empty:
        raise ValueError(f"no {dataset} rows with noise {noise:g}")
    ts = final_encoders(rows[rows["stage"] == "two-stage"])
    ts = ts[ts["loss"] == loss].copy()
    ss = rows[rows["stage"] == "single-stage"].copy()
    ts["row"] = [f"{label(m)}+{label(loss)}" for m in ts["method"]]
    ss["row"] = [label(m) for m in ss["method"]]
    order = [label(b) for b in ordered(ss["method"].tolist(), BASELINE_ORDER)]
    order += [f"{label(m)}+{label(loss)}" for m in ordered(ts["method"].tolist(), SSL_ORDER)]
    data = summarize(pd.concat([ss, ts]), ["row", "gamma"])
    if data.empty:
        raise ValueError(f"no {dataset} rows with a baseline or loss {loss!r}")
    if with_std:
        data["cell"] = [
            f"{m:.1f} ± {s:.1f}" if n > 1 else f"{m:.1f}"
            for m, s, n in zip(data["mean"], data["std"], data["n"], strict=True)
        ]
        table = data.pivot(index="row", columns="gamma", values="cell")
    else:
        table = data.pivot(index="row", columns="gamma", values="mean")
    table = table.reindex([r for r in order if r in table.index])
    table.columns = [int(g) if float(g).is_integer() else float(g) for g in table.columns]
    table.columns.name = "gamma"
    table.index.name = "method"
    return table
