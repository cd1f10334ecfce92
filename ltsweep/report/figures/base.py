"""What every figure shares: orders, display names, the rows it plots, the drawing helpers.

The conventions (means and error bars over seeds, the longest pre-training per encoder,
single-stage baselines matched to losses by name) are stated in `ltsweep.report.figures`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ltsweep.store.results import measured_noise

SSL_ORDER = ("simsiam", "simclr", "byol", "barlow")
LOSS_ORDER = ("ce", "ce+sl", "la", "la+sl")
BASELINE_ORDER = ("dividemix", "elr+", "elr", "ce", "la", "sl", "la+sl")
#: single-stage baseline method -> the two-stage loss it corresponds to
SINGLE_STAGE_LOSS = {"ce": "ce", "la": "la", "sl": "ce+sl", "la+sl": "la+sl"}

LABELS = {
    "simsiam": "SimSiam",
    "simclr": "SimCLR",
    "byol": "BYOL",
    "barlow": "Barlow Twins",
    "elr": "ELR",
    "elr+": "ELR+",
    "dividemix": "DivideMix",
    "ce": "CE",
    "ce+sl": "CE+SL",
    "la": "LA",
    "la+sl": "LA+SL",
    "sl": "SL",
}
DATASETS = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "clothing1m": "Clothing1M",
    "digits": "digits",
}
#: One colour and style per loss and method, the same in every figure. Lines of a figure
#: that compares losses (Figs. 3-4) take the loss's colour; a single-stage CE / LA / SL /
#: LA+SL baseline always takes its loss's colour (SL: CE+SL's), dashed with squares; an SSL
#: method's two-stage line in Fig. 5 takes the method's colour, solid with circles; DivideMix
#: and the ELRs have their own colours, marker and dash-dot line.
LOSS_COLOURS = {"ce": "#1f77b4", "ce+sl": "#ff7f0e", "la": "#2ca02c", "la+sl": "#d62728"}
METHOD_COLOURS = {
    "simsiam": "#9467bd",
    "simclr": "#8c564b",
    "byol": "#e377c2",
    "barlow": "#17becf",
    "dividemix": "#000000",
    "elr": "#7f7f7f",
    "elr+": "#bcbd22",
}
_OTHER_MARKERS = {"dividemix": "^", "elr": "v", "elr+": "D"}
NOISE_AXIS = "symmetric label noise (%)"
ACC_AXIS = "test accuracy (%)"


def label(name: str) -> str:
    """Display name of a method, baseline or loss (`simsiam` -> `SimSiam`)."""
    return LABELS.get(str(name), str(name))


def dataset_label(name: str) -> str:
    """Display name of a data set (`cifar10` -> `CIFAR-10`)."""
    return DATASETS.get(str(name), str(name))


def fmt_num(x: Any) -> str:
    """`50.0` -> `50`, `2.5` -> `2.5`: gammas and noise levels read as the paper writes them."""
    x = float(x)
    return f"{x:.0f}" if x.is_integer() else f"{x:g}"


def pct(noise: float) -> str:
    return fmt_num(round(float(noise) * 100, 6))


# ---------------------------------------------------------------------------- data helpers


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    out = measured_noise(df)
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


def two_stage_rows(df: pd.DataFrame) -> pd.DataFrame:
    out = ok_rows(df)
    return final_encoders(out[out["stage"] == "two-stage"])


def single_stage_rows(df: pd.DataFrame) -> pd.DataFrame:
    out = ok_rows(df)
    return out[out["stage"] == "single-stage"]


# ---------------------------------------------------------------------------- drawing helpers


def new_figure(
    nrows: int, ncols: int, width: float = 4.4, height: float = 3.3
) -> tuple[Figure, np.ndarray]:
    # at least 7 inches wide, so a one-panel figure still has room for its title
    fig = Figure(figsize=(max(7.0, width * ncols), height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def blank(ax: Axes, text: str = "no data") -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.5")


def style(stage: str, method: str, loss: str | None = None) -> dict[str, Any]:
    """Colour, marker and line style of a line (see `LOSS_COLOURS`): `loss` given, a
    two-stage line takes the loss's colour, else the method's."""
    if stage == "two-stage":
        colour = LOSS_COLOURS.get(str(loss)) if loss else METHOD_COLOURS.get(str(method))
        return {"color": colour or "0.4", "marker": "o", "linestyle": "-"}
    if method in SINGLE_STAGE_LOSS:
        return {"color": LOSS_COLOURS[SINGLE_STAGE_LOSS[method]], "marker": "s", "linestyle": "--"}
    return {
        "color": METHOD_COLOURS.get(str(method), "0.4"),
        "marker": _OTHER_MARKERS.get(str(method), "P"),
        "linestyle": "-.",
    }


def error_bars(data: pd.DataFrame) -> np.ndarray | None:
    """The std column as error bars, none where a cell has a single row (n = 1: no spread
    measured, so no zero-height bar is drawn); None when no cell has more than one row."""
    n = data["n"].to_numpy(float) if "n" in data else np.full(len(data), 2.0)
    std = data["std"].to_numpy(float)
    if not (n > 1).any():
        return None
    return np.where(n > 1, std, np.nan)


def noise_line(
    ax: Axes, data: pd.DataFrame, stage: str, name: str, method: str, loss: str | None = None
) -> None:
    """One error-bar line: x = noise in percent, y = mean, bars = std (over n > 1 rows),
    styled by `style(stage, method, loss)`."""
    data = data.sort_values("noise")
    ax.errorbar(
        data["noise"].to_numpy(float) * 100,
        data["mean"].to_numpy(float),
        yerr=error_bars(data),
        capsize=3,
        markersize=4,
        linewidth=1.4,
        label=name,
        **style(stage, method, loss),
    )


def panels_by_dataset_gamma(keys: pd.DataFrame) -> tuple[list[str], list[list[float]]]:
    datasets = ordered(keys["dataset"].tolist(), tuple(DATASETS))
    gammas = [sorted(keys.loc[keys["dataset"] == d, "gamma"].unique().tolist()) for d in datasets]
    return datasets, gammas


def noise_curves_only(data: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Drop datasets with a single noise level when others have several.

    A curve over noise is meaningless at one point (Clothing1M carries its own noise and
    has Table 1 instead); a sweep where every dataset has one level keeps its points.
    """
    levels = data.groupby("dataset")["noise"].nunique()
    single = [d for d in levels.index if levels[d] < 2]
    if len(single) == len(levels):
        return data, []
    return data[~data["dataset"].isin(single)].reset_index(drop=True), single


def noise_axis(ax: Axes, noises: Sequence[float]) -> None:
    ticks = sorted({round(float(n) * 100, 6) for n in noises})
    if len(ticks) <= 12:
        ax.set_xticks(ticks, [fmt_num(t) for t in ticks])
    ax.set_xlabel(NOISE_AXIS)


def figure_legend(fig: Figure, axes: np.ndarray) -> None:
    """One legend for all panels (union of their entries), below them: outside the panels,
    clear of the figure's title (a legend at the upper right covered it)."""
    handles: dict[str, Any] = {}
    for ax in np.asarray(axes).flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if handles:
        ncol = min(len(handles), 4 if fig.get_figwidth() >= 8 else 2)
        fig.legend(
            list(handles.values()), list(handles), loc="outside lower center", ncol=ncol, fontsize=8
        )


def noise_panels(
    data: pd.DataFrame, draw: Callable[[Axes, pd.DataFrame], None], title: str, **extra: Any
) -> Figure:
    """Accuracy vs noise, one panel per dataset (rows) and gamma (columns), one legend.

    `draw(ax, panel)` adds the lines of one panel (`data`'s rows of that dataset and gamma);
    the axes, titles and the shared legend are done here. The figure carries `data` and
    `extra` (`attach`).
    """
    datasets, gammas_of = panels_by_dataset_gamma(data)
    ncols = max(len(g) for g in gammas_of)
    fig, axes = new_figure(len(datasets), ncols)
    for i, ds in enumerate(datasets):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(gammas_of[i]):
                ax.set_axis_off()
                continue
            g = gammas_of[i][j]
            panel = data[(data["dataset"] == ds) & (data["gamma"] == g)]
            draw(ax, panel)
            noise_axis(ax, panel["noise"].unique())
            ax.set_ylabel(ACC_AXIS)
            ax.set_title(f"{dataset_label(ds)}, gamma = {fmt_num(g)}", fontsize=10)
    figure_legend(fig, axes)
    fig.suptitle(title)
    return attach(fig, data, **extra)


def attach(fig: Figure, data: pd.DataFrame, **extra: Any) -> Figure:
    fig.ltsweep_data = data.reset_index(drop=True)  # type: ignore[attr-defined]
    for k, v in extra.items():
        setattr(fig, f"ltsweep_{k}", v)
    return fig
