"""Fig. 6 and Figs. 7-8: the pre-trained encoders, by pre-training length and by t-SNE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from ltsweep.report.figures.base import (
    ACC_AXIS,
    DATASETS,
    SSL_ORDER,
    attach,
    blank,
    dataset_label,
    error_bars,
    figure_legend,
    fmt_num,
    label,
    new_figure,
    ok_rows,
    ordered,
    pct,
    summarize,
)


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
    ts = ok_rows(df)
    ts = ts[ts["stage"] == "two-stage"]
    if ts.empty:
        raise ValueError("no two-stage rows: Fig. 6 follows SSL pre-training length")
    n_epochs = ts.groupby("dataset")["pretrain_epochs"].nunique()
    multi = [d for d in n_epochs.index if n_epochs[d] > 1]
    if dataset is None:
        if not multi:
            raise ValueError("no two-stage rows with more than one pretrain_epochs value")
        dataset = "clothing1m" if "clothing1m" in multi else ordered(multi, tuple(DATASETS))[0]
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

    fig, axes = new_figure(1, 2, width=5.0, height=3.6)
    titles = {
        "finetune_acc": f"(a) after fine-tuning ({label(loss)}, noise {pct(noise)}%)",
        "knn_acc": "(b) kNN monitor (k=200) of the encoder",
    }
    ylabels = {"finetune_acc": ACC_AXIS, "knn_acc": "kNN accuracy (%)"}
    for ax, metric in zip(axes[0], ("finetune_acc", "knn_acc"), strict=True):
        sub = data[data["metric"] == metric]
        if sub.empty:
            blank(ax, "no kNN values recorded" if metric == "knn_acc" else "no data")
            continue
        gammas = sorted(sub["gamma"].unique())
        for k, g in enumerate(gammas):
            line = sub[sub["gamma"] == g].sort_values("pretrain_epochs")
            ax.errorbar(
                line["pretrain_epochs"].to_numpy(float),
                line["mean"].to_numpy(float),
                yerr=error_bars(line),
                capsize=3,
                marker="o",
                markersize=4,
                # gammas in order along viridis: no colour of a loss or method (base.py)
                color=colormaps["viridis"](0.85 * k / max(1, len(gammas) - 1)),
                label=f"gamma = {fmt_num(g)}",
            )
        ax.set_xlabel("self-supervised pre-training epochs")
        ax.set_ylabel(ylabels[metric])
        ax.set_title(titles[metric], fontsize=10)
    figure_legend(fig, axes)
    fig.suptitle(
        f"Fig. 6: {dataset_label(dataset)}, {label(method)}: effect of pre-training length"
    )
    return attach(fig, data, dataset=dataset, method=method, noise=noise)


# ---------------------------------------------------------------------------- curves


def fig_pretrain_curves(curves: pd.DataFrame) -> Figure:
    """Self-supervised pre-training curves: (a) the SSL loss and (b) the kNN monitor accuracy
    per epoch, one row of panels per (dataset, SSL method), one line per gamma (viridis, as
    Fig. 6), mean over data seeds with the std as a band-free error bar where n > 1.

    `curves` is `ltsweep.load_pretrains(run)` (one row per pre-train and epoch). Not a figure
    of the paper: it shows whether the encoders converged. `ltsweep_data`: dataset, method,
    metric (loss | knn_acc), gamma, epoch, mean, std, n (kNN in %).
    """
    if curves is None or curves.empty:
        raise ValueError("no pre-training epochs recorded (ltsweep.load_pretrains is empty)")
    parts = []
    for metric, scale in (("loss", 1.0), ("knn_acc", 100.0)):
        rows = curves[curves[metric].notna()]
        got = summarize(rows, ["dataset", "method", "gamma", "epoch"], value=metric, scale=scale)
        parts.append(got.assign(metric=metric))
    data = pd.concat(parts, ignore_index=True)
    if data.empty:
        raise ValueError("no pre-training epoch has a loss or a kNN accuracy")
    keys = data[["dataset", "method"]].drop_duplicates()
    datasets = ordered(keys["dataset"].tolist(), tuple(DATASETS))
    cells = [
        (d, m)
        for d in datasets
        for m in ordered(keys.loc[keys["dataset"] == d, "method"].tolist(), SSL_ORDER)
    ]
    fig, axes = new_figure(len(cells), 2, width=5.0, height=3.2)
    gammas = sorted(data["gamma"].unique())
    ylabels = {"loss": "SSL loss", "knn_acc": "kNN accuracy (%)"}
    for i, (ds, m) in enumerate(cells):
        for ax, metric in zip(axes[i], ("loss", "knn_acc"), strict=True):
            sub = data[(data["dataset"] == ds) & (data["method"] == m) & (data["metric"] == metric)]
            if sub.empty:
                blank(ax, "no kNN values recorded" if metric == "knn_acc" else "no data")
                continue
            for g in sorted(sub["gamma"].unique()):
                line = sub[sub["gamma"] == g].sort_values("epoch")
                ax.errorbar(
                    line["epoch"].to_numpy(float),
                    line["mean"].to_numpy(float),
                    yerr=error_bars(line),
                    capsize=2,
                    marker="o" if len(line) <= 30 else None,
                    markersize=3,
                    color=colormaps["viridis"](0.85 * gammas.index(g) / max(1, len(gammas) - 1)),
                    label=f"gamma = {fmt_num(g)}",
                )
            ax.set_xlabel("pre-training epoch")
            ax.set_ylabel(ylabels[metric])
            ax.set_title(f"{dataset_label(ds)}, {label(m)}", fontsize=10)
    figure_legend(fig, axes)
    fig.suptitle("Self-supervised pre-training: loss and kNN monitor per epoch")
    cols = ["dataset", "method", "metric", "gamma", "epoch", "mean", "std", "n"]
    return attach(fig, data[cols])


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
    fig, axes = new_figure(1, len(gammas), width=4.2, height=4.0)
    points, summary = [], []
    legend: dict[str, Any] = {}  # class -> handle: one legend below the panels, off the points
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
            for h, c in zip(*sc.legend_elements(num=None), strict=True):
                legend.setdefault(c, h)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"gamma = {fmt_num(g)} (2-D 5-NN acc. {100 * score:.0f}%)", fontsize=10)
        points.append(pd.DataFrame({"gamma": float(g), "x": emb[:, 0], "y": emb[:, 1], "label": y}))
        summary.append(
            {"gamma": float(g), "points": len(y), "classes": len(classes), "knn2d_acc": score}
        )
    if legend:
        fig.legend(
            list(legend.values()),
            list(legend),
            loc="outside lower center",
            ncol=min(len(legend), 10),
            fontsize=7,
            markerscale=0.8,
            title="class",
            title_fontsize=7,
        )
    fig.suptitle(title or "t-SNE of frozen test features, coloured by class")
    return attach(fig, pd.concat(points, ignore_index=True), summary=pd.DataFrame(summary))
