"""The paper's figures (3-8) and Table 1, drawn from the results table.

Every function takes the DataFrame of `ltsweep.results.load_results` (or tidy arrays for the
t-SNE) and returns a new `matplotlib.figure.Figure` rendered with the Agg canvas: no pyplot,
so nothing leaks into a global figure list and the functions are safe in a server, a test or
a notebook. Each figure carries the numbers it plots as `fig.ltsweep_data` (a tidy
DataFrame: accuracies in percent, `noise` and `gamma` as in the table), so a test or the
report can check and print exactly what is drawn rather than re-deriving it.

Conventions shared by all figures:
- Mean and error bar are taken over every row of a cell, i.e. over `seed` and `data_seed`;
  the error bar is the sample standard deviation (ddof=1), 0 when the cell has one row.
- Two-stage rows use the longest pre-training of each (dataset, method, gamma) encoder
  (`final_encoders`): a sweep for Fig. 6 also stores fine-tunes of earlier checkpoints, and
  mixing them in would mix different encoders. Fig. 6 itself uses every epoch.
- Single-stage CE/LA/SL/LA+SL baselines are matched to the two-stage losses by their method
  name (SL alone is CE+SL), whatever their `loss` column says.
- A figure the data cannot support raises `ValueError` with the reason; the report catches
  it and lists the figure as skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "SSL_ORDER",
    "LOSS_ORDER",
    "BASELINE_ORDER",
    "SINGLE_STAGE_LOSS",
    "label",
    "dataset_label",
    "fmt_num",
    "ordered",
    "final_encoders",
    "summarize",
    "fig3_loss_gain",
    "fig4_two_vs_single_stage",
    "fig5_methods_vs_noise",
    "table1_clothing1m",
    "fig6_pretrain_epochs",
    "fig78_tsne",
    "tsne_embed",
    "knn_separability",
]

SSL_ORDER = ("simsiam", "simclr", "byol", "barlow")
LOSS_ORDER = ("ce", "ce+sl", "la", "la+sl")
BASELINE_ORDER = ("dividemix", "elr", "ce", "la", "sl", "la+sl")
#: single-stage baseline method -> the two-stage loss it corresponds to
SINGLE_STAGE_LOSS = {"ce": "ce", "la": "la", "sl": "ce+sl", "la+sl": "la+sl"}

_LABELS = {
    "simsiam": "SimSiam",
    "simclr": "SimCLR",
    "byol": "BYOL",
    "barlow": "Barlow Twins",
    "elr": "ELR",
    "dividemix": "DivideMix",
    "ce": "CE",
    "ce+sl": "CE+SL",
    "la": "LA",
    "la+sl": "LA+SL",
    "sl": "SL",
}
_DATASETS = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "clothing1m": "Clothing1M",
    "digits": "digits",
}
_LOSS_COLOURS = {"ce": "C0", "ce+sl": "C1", "la": "C2", "la+sl": "C3"}
_NOISE_AXIS = "symmetric label noise (%)"
_ACC_AXIS = "test accuracy (%)"


def label(name: str) -> str:
    """Display name of a method, baseline or loss (`simsiam` -> `SimSiam`)."""
    return _LABELS.get(str(name), str(name))


def dataset_label(name: str) -> str:
    """Display name of a data set (`cifar10` -> `CIFAR-10`)."""
    return _DATASETS.get(str(name), str(name))


def fmt_num(x: Any) -> str:
    """`50.0` -> `50`, `2.5` -> `2.5`: gammas and noise levels read as the paper writes them."""
    x = float(x)
    return f"{x:.0f}" if x.is_integer() else f"{x:g}"


def _pct(noise: float) -> str:
    return fmt_num(round(float(noise) * 100, 6))


# ---------------------------------------------------------------------------- data helpers


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    out = df
    if "status" in out.columns:
        out = out[out["status"].fillna("ok") == "ok"]
    return out[out["acc"].notna()]


def ordered(values: Sequence[Any], preferred: Sequence[Any]) -> list[Any]:
    """`values` deduplicated, those in `preferred` first in that order, the rest sorted."""
    seen = list(dict.fromkeys(values))
    first = [v for v in preferred if v in seen]
    return first + sorted((v for v in seen if v not in first), key=str)


def final_encoders(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of `df` with two-stage rows kept only for the longest pre-training.

    Per (dataset, method, gamma) the largest `pretrain_epochs` wins; single-stage rows pass
    unchanged. Why: a sweep that also fine-tunes earlier checkpoints (Fig. 6) must not mix
    weaker encoders into the per-noise means of Figs. 3-5.
    """
    two = df[df["stage"] == "two-stage"]
    if two.empty:
        return df
    longest = two.groupby(["dataset", "method", "gamma"])["pretrain_epochs"].transform("max")
    keep_two = two[two["pretrain_epochs"] == longest]
    return pd.concat([keep_two, df[df["stage"] != "two-stage"]]).sort_index()


def summarize(
    df: pd.DataFrame, by: Sequence[str], value: str = "acc", scale: float = 100.0
) -> pd.DataFrame:
    """Mean, standard deviation (ddof=1, 0 for one row) and count of `value` per `by` group.

    Rows of a group are the seeds and data seeds of one cell; `scale` turns fractions into
    percent.
    """
    by = list(by)
    if df.empty:
        return pd.DataFrame(columns=[*by, "mean", "std", "n"])
    vals = df[[*by, value]].copy()
    vals[value] = vals[value].astype(float) * scale
    g = vals.groupby(by, sort=True, dropna=False)[value]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out = out.rename(columns={"count": "n"})
    out = out[out["n"] > 0]
    out["std"] = out["std"].fillna(0.0)
    return out.reset_index(drop=True)


def _two_stage(df: pd.DataFrame) -> pd.DataFrame:
    out = _ok(df)
    return final_encoders(out[out["stage"] == "two-stage"])


def _single_stage(df: pd.DataFrame) -> pd.DataFrame:
    out = _ok(df)
    return out[out["stage"] == "single-stage"]


# ---------------------------------------------------------------------------- drawing helpers


def _new_figure(
    nrows: int, ncols: int, width: float = 4.4, height: float = 3.3
) -> tuple[Figure, np.ndarray]:
    # at least 7 inches wide, so a one-panel figure still has room for its title
    fig = Figure(figsize=(max(7.0, width * ncols), height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _blank(ax: Axes, text: str = "no data") -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.5")


def _line(ax: Axes, data: pd.DataFrame, **style: Any) -> None:
    """One error-bar line: x = noise in percent, y = mean, bars = std."""
    data = data.sort_values("noise")
    ax.errorbar(
        data["noise"].to_numpy(float) * 100,
        data["mean"].to_numpy(float),
        yerr=data["std"].to_numpy(float),
        capsize=3,
        markersize=4,
        linewidth=1.4,
        **style,
    )


def _panels_by_dataset_gamma(keys: pd.DataFrame) -> tuple[list[str], list[list[float]]]:
    datasets = ordered(keys["dataset"].tolist(), tuple(_DATASETS))
    gammas = [sorted(keys.loc[keys["dataset"] == d, "gamma"].unique().tolist()) for d in datasets]
    return datasets, gammas


def _noise_curves_only(data: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Drop datasets with a single noise level when others have several.

    A curve over noise is meaningless at one point (Clothing1M carries its own noise and
    has Table 1 instead); a sweep where every dataset has one level keeps its points.
    """
    levels = data.groupby("dataset")["noise"].nunique()
    single = [d for d in levels.index if levels[d] < 2]
    if len(single) == len(levels):
        return data, []
    return data[~data["dataset"].isin(single)].reset_index(drop=True), single


def _noise_axis(ax: Axes, noises: Sequence[float]) -> None:
    ticks = sorted({round(float(n) * 100, 6) for n in noises})
    if len(ticks) <= 12:
        ax.set_xticks(ticks, [fmt_num(t) for t in ticks])
    ax.set_xlabel(_NOISE_AXIS)


def _figure_legend(fig: Figure, axes: np.ndarray) -> None:
    """One legend for all panels (union of their entries), outside on the right."""
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)


def _attach(fig: Figure, data: pd.DataFrame, **extra: Any) -> Figure:
    fig.ltsweep_data = data.reset_index(drop=True)  # type: ignore[attr-defined]
    for k, v in extra.items():
        setattr(fig, f"ltsweep_{k}", v)
    return fig


# ---------------------------------------------------------------------------- Fig. 3


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
    ts = _two_stage(df)
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

    datasets = ordered(data["dataset"].tolist(), tuple(_DATASETS))
    meths = ordered(data["method"].tolist(), SSL_ORDER)
    n_noise = data["noise"].nunique()
    fig, axes = _new_figure(len(datasets), len(meths), width=max(4.4, 1.5 + 0.45 * n_noise))
    for i, ds in enumerate(datasets):
        for j, m in enumerate(meths):
            ax = axes[i][j]
            cell = data[(data["dataset"] == ds) & (data["method"] == m)]
            if cell.empty:
                _blank(ax)
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
                    yerr=sub["std"].to_numpy(float),
                    capsize=2,
                    color=_LOSS_COLOURS.get(loss),
                    label=label(loss),
                )
            ax.axhline(0, color="0.3", linewidth=0.8)
            ax.set_xticks(x, [_pct(n) for n in noises])
            ax.set_xlabel(_NOISE_AXIS)
            ax.set_ylabel("accuracy gain over CE (points)")
            ax.set_title(
                f"{dataset_label(ds)}, {label(m)} (gamma {cell['gammas'].iloc[0]} averaged)",
                fontsize=10,
            )
            ax.legend(fontsize=8)
    fig.suptitle("Fig. 3: gain of each fine-tuning loss over CE (two-stage)")
    return _attach(fig, data)


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
    ts = _two_stage(df)
    ss = _single_stage(df)
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
    data, dropped = _noise_curves_only(data.reset_index(drop=True))

    datasets, gammas_of = _panels_by_dataset_gamma(data)
    ncols = max(len(g) for g in gammas_of)
    fig, axes = _new_figure(len(datasets), ncols)
    for i, ds in enumerate(datasets):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(gammas_of[i]):
                ax.set_axis_off()
                continue
            g = gammas_of[i][j]
            panel = data[(data["dataset"] == ds) & (data["gamma"] == g)]
            for loss in losses:
                colour = _LOSS_COLOURS.get(loss)
                two = panel[(panel["stage"] == "two-stage") & (panel["loss"] == loss)]
                one = panel[(panel["stage"] == "single-stage") & (panel["loss"] == loss)]
                if not two.empty:
                    _line(
                        ax,
                        two,
                        color=colour,
                        marker="o",
                        linestyle="-",
                        label=f"two-stage {label(method)}, {label(loss)}",
                    )
                if not one.empty:
                    base = one["method"].iloc[0]
                    _line(
                        ax,
                        one,
                        color=colour,
                        marker="s",
                        linestyle="--",
                        label=f"single-stage {label(base)}",
                    )
            _noise_axis(ax, panel["noise"].unique())
            ax.set_ylabel(_ACC_AXIS)
            ax.set_title(f"{dataset_label(ds)}, gamma = {fmt_num(g)}", fontsize=10)
    _figure_legend(fig, axes)
    fig.suptitle(f"Fig. 4: two-stage ({label(method)}) vs single-stage training, per loss")
    return _attach(fig, data, method=method, dropped=dropped)


# ---------------------------------------------------------------------------- Fig. 5


def fig5_methods_vs_noise(
    df: pd.DataFrame,
    loss: str = "la+sl",
    methods: Sequence[str] | None = None,
    baselines: Sequence[str] | None = None,
) -> Figure:
    """Fig. 5: accuracy vs noise of every SSL method (two-stage, fine-tuned with `loss`) and
    every single-stage baseline (ELR, DivideMix, CE, ... trained from scratch).

    Solid lines are SSL methods, dashed ones baselines; one panel per dataset (rows) and
    gamma (columns). Datasets with a single noise level (Clothing1M: see Table 1) are left
    out when others have several (`fig.ltsweep_dropped`). `ltsweep_data`: dataset, gamma,
    stage, method, noise, mean, std, n.
    """
    ts = _two_stage(df)
    ts = ts[ts["loss"] == loss]
    if methods is not None:
        ts = ts[ts["method"].isin(list(methods))]
    if ts.empty:
        raise ValueError(f"no two-stage rows fine-tuned with {loss!r}")
    ss = _single_stage(df)
    if baselines is not None:
        ss = ss[ss["method"].isin(list(baselines))]
    data = summarize(pd.concat([ts, ss]), ["dataset", "gamma", "stage", "method", "noise"])
    data, dropped = _noise_curves_only(data)

    datasets, gammas_of = _panels_by_dataset_gamma(data)
    ncols = max(len(g) for g in gammas_of)
    ssl = ordered(ts["method"].tolist(), SSL_ORDER)
    base = ordered(ss["method"].tolist(), BASELINE_ORDER)
    colours = {("two-stage", m): f"C{k}" for k, m in enumerate(ssl)}
    colours.update({("single-stage", b): f"C{(len(ssl) + k) % 10}" for k, b in enumerate(base)})
    fig, axes = _new_figure(len(datasets), ncols)
    for i, ds in enumerate(datasets):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(gammas_of[i]):
                ax.set_axis_off()
                continue
            g = gammas_of[i][j]
            panel = data[(data["dataset"] == ds) & (data["gamma"] == g)]
            for stage, names in (("two-stage", ssl), ("single-stage", base)):
                for m in names:
                    sub = panel[(panel["stage"] == stage) & (panel["method"] == m)]
                    if sub.empty:
                        continue
                    two = stage == "two-stage"
                    _line(
                        ax,
                        sub,
                        color=colours[(stage, m)],
                        marker="o" if two else "s",
                        linestyle="-" if two else "--",
                        label=f"{label(m)} + {label(loss)}"
                        if two
                        else f"{label(m)} (single-stage)",
                    )
            _noise_axis(ax, panel["noise"].unique())
            ax.set_ylabel(_ACC_AXIS)
            ax.set_title(f"{dataset_label(ds)}, gamma = {fmt_num(g)}", fontsize=10)
    _figure_legend(fig, axes)
    fig.suptitle(f"Fig. 5: SSL methods (fine-tuned with {label(loss)}) and baselines vs noise")
    return _attach(fig, data, loss=loss, dropped=dropped)


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
    rows = _ok(df)
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


# ---------------------------------------------------------------------------- Fig. 6


def fig6_pretrain_epochs(
    df: pd.DataFrame,
    dataset: str | None = None,
    method: str | None = None,
    loss: str = "la+sl",
    noise: float | None = None,
) -> Figure:
    """Fig. 6: (a) fine-tuned accuracy and (b) kNN monitor accuracy vs pre-training epochs.

    One line per gamma. Shows whether the cheap kNN proxy predicts the accuracy after
    fine-tuning (the paper finds it only weakly does). Defaults: Clothing1M if it has
    several `pretrain_epochs`, else the first such dataset; SimSiam if present; the lowest
    noise level. The kNN value belongs to the encoder, so it is averaged over distinct
    (pretrain_key, pretrain_epochs), not over the fine-tunes that share an encoder.
    `ltsweep_data`: metric (finetune_acc | knn_acc), gamma, pretrain_epochs, mean, std, n.
    """
    ts = _ok(df)
    ts = ts[ts["stage"] == "two-stage"]
    if ts.empty:
        raise ValueError("no two-stage rows: Fig. 6 follows SSL pre-training length")
    n_epochs = ts.groupby("dataset")["pretrain_epochs"].nunique()
    multi = [d for d in n_epochs.index if n_epochs[d] > 1]
    if dataset is None:
        if not multi:
            raise ValueError("no two-stage rows with more than one pretrain_epochs value")
        dataset = "clothing1m" if "clothing1m" in multi else ordered(multi, tuple(_DATASETS))[0]
    ts = ts[ts["dataset"] == dataset]
    if method is None:
        per_method = ts.groupby("method")["pretrain_epochs"].nunique()
        cands = [m for m in per_method.index if per_method[m] > 1]
        if not cands:
            raise ValueError(f"no {dataset} method has more than one pretrain_epochs value")
        method = ordered(cands, SSL_ORDER)[0]
    ts = ts[ts["method"] == method]
    if ts["pretrain_epochs"].nunique() < 2:
        raise ValueError(f"{method} on {dataset}: fewer than two pretrain_epochs values")
    ft = ts[ts["loss"] == loss]
    if ft.empty:
        raise ValueError(f"no {dataset} {method} rows fine-tuned with {loss!r}")
    if noise is None:
        noise = float(ft["noise"].min())
    ft = ft[np.isclose(ft["noise"].astype(float), noise)]
    acc = summarize(ft, ["gamma", "pretrain_epochs"])
    acc.insert(0, "metric", "finetune_acc")
    enc = ts.drop_duplicates(["pretrain_key", "pretrain_epochs"])
    enc = enc[enc["knn_acc"].notna()]
    knn = summarize(enc, ["gamma", "pretrain_epochs"], value="knn_acc")
    knn.insert(0, "metric", "knn_acc")
    data = pd.concat([acc, knn], ignore_index=True)

    fig, axes = _new_figure(1, 2, width=5.0, height=3.6)
    titles = {
        "finetune_acc": f"(a) after fine-tuning ({label(loss)}, noise {_pct(noise)}%)",
        "knn_acc": "(b) kNN monitor (k=200) of the encoder",
    }
    ylabels = {"finetune_acc": _ACC_AXIS, "knn_acc": "kNN accuracy (%)"}
    for ax, metric in zip(axes[0], ("finetune_acc", "knn_acc"), strict=True):
        sub = data[data["metric"] == metric]
        if sub.empty:
            _blank(ax, "no kNN values recorded" if metric == "knn_acc" else "no data")
            continue
        for k, g in enumerate(sorted(sub["gamma"].unique())):
            line = sub[sub["gamma"] == g].sort_values("pretrain_epochs")
            ax.errorbar(
                line["pretrain_epochs"].to_numpy(float),
                line["mean"].to_numpy(float),
                yerr=line["std"].to_numpy(float),
                capsize=3,
                marker="o",
                markersize=4,
                color=f"C{k}",
                label=f"gamma = {fmt_num(g)}",
            )
        ax.set_xlabel("self-supervised pre-training epochs")
        ax.set_ylabel(ylabels[metric])
        ax.set_title(titles[metric], fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"Fig. 6: {dataset_label(dataset)}, {label(method)}: effect of pre-training length"
    )
    return _attach(fig, data, dataset=dataset, method=method, noise=noise)


# ---------------------------------------------------------------------------- Figs. 7-8


def tsne_embed(
    features: Any, max_points: int | None = 2000, seed: int = 0, labels: Any = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """2-D t-SNE of feature rows; returns (embedding, labels of the kept rows, kept indices).

    Rows are L2-normalised first (the SSL losses and the kNN monitor compare features by
    cosine) and reduced to 50 PCA dimensions when wider, the standard speed-up; at most
    `max_points` random rows are kept because t-SNE is quadratic-ish in the point count.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 5:
        raise ValueError(f"t-SNE needs a 2-D array of at least 5 rows, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    idx = np.arange(len(x))
    if max_points is not None and len(x) > max_points:
        idx = np.sort(rng.choice(len(x), size=max_points, replace=False))
    x = x[idx]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if x.shape[1] > 50:
        x = PCA(n_components=min(50, len(x)), random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    emb = TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
    ).fit_transform(x)
    y = None if labels is None else np.asarray(labels).reshape(-1)[idx]
    return emb, y, idx


def knn_separability(embedding: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy of the labels on an embedding: how well classes separate."""
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    k = max(1, min(k, len(labels) - 1))
    nn = NearestNeighbors(n_neighbors=k + 1).fit(embedding)
    _, ind = nn.kneighbors(embedding)
    neigh = labels[ind[:, 1:]]
    pred = np.array([np.bincount(row).argmax() for row in neigh.astype(np.int64)])
    return float((pred == labels).mean())


def fig78_tsne(
    features: Mapping[float, tuple[Any, Any]],
    max_points: int = 2000,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """Figs. 7-8: t-SNE of frozen test features coloured by class, one panel per gamma.

    `features` maps gamma -> (test features [N, D], test labels [N]) as numpy arrays or
    torch tensors. The paper uses it to show that imbalance barely erodes class
    separability; each panel title gives the leave-one-out 5-NN accuracy on the 2-D map as a
    number for that claim. `ltsweep_data`: gamma, x, y, label; `ltsweep_summary`: gamma,
    points, classes, knn2d_acc.
    """
    if not features:
        raise ValueError("no features to project")
    gammas = sorted(features, key=float)
    fig, axes = _new_figure(1, len(gammas), width=4.2, height=4.0)
    points, summary = [], []
    for ax, g in zip(axes[0], gammas, strict=True):
        feats, labels = features[g]
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        emb, y, _ = tsne_embed(feats, max_points=max_points, seed=seed, labels=labels)
        assert y is not None
        score = knn_separability(emb, y)
        classes = np.unique(y)
        cmap = "tab10" if len(classes) <= 10 else ("tab20" if len(classes) <= 20 else "turbo")
        sc = ax.scatter(emb[:, 0], emb[:, 1], c=y, cmap=cmap, s=4, linewidths=0, alpha=0.8)
        if len(classes) <= 20:
            ax.legend(
                *sc.legend_elements(num=None),
                fontsize=6,
                markerscale=0.8,
                title="class",
                title_fontsize=7,
                loc="best",
            )
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"gamma = {fmt_num(g)} (2-D 5-NN acc. {100 * score:.0f}%)", fontsize=10)
        points.append(pd.DataFrame({"gamma": float(g), "x": emb[:, 0], "y": emb[:, 1], "label": y}))
        summary.append(
            {"gamma": float(g), "points": len(y), "classes": len(classes), "knn2d_acc": score}
        )
    fig.suptitle(title or "t-SNE of frozen test features, coloured by class")
    return _attach(fig, pd.concat(points, ignore_index=True), summary=pd.DataFrame(summary))
