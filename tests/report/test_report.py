"""The report: figures plot exactly the numbers of the results table, and the pages are whole.

A synthetic run folder with the real schema (written with `write_rows`, read back with
`load_results`) covers two CIFAR data sets and Clothing1M, several gammas and noise levels,
the four losses, two SSL methods, the single-stage baselines, two seeds and three
pre-training lengths. Expected values are recomputed here with plain pandas.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.image import imread

from ltsweep.report import (
    FIGURE_NAMES,
    compare_with_paper,
    fig3_loss_gain,
    fig4_two_vs_single_stage,
    fig5_methods_vs_noise,
    fig6_pretrain_epochs,
    fig78_tsne,
    table1_clothing1m,
    write_report,
)
from ltsweep.report.tables import pivot_tables, summary_lines
from ltsweep.store.results import load_results, write_rows

GAMMAS = {"cifar10": [1.0, 50.0, 100.0], "cifar100": [1.0, 10.0]}
NOISES = [0.0, 0.2, 0.6, 0.9]
LOSS_BONUS = {"ce": 0.0, "ce+sl": 0.01, "la": 0.02, "la+sl": 0.04}
SSL_BONUS = {"simsiam": 0.0, "byol": 0.015}
FINAL = 800


def _acc(ds: str, gamma: float, noise: float, bonus: float, seed: int, salt: int) -> float:
    base = 0.92 if ds == "cifar10" else 0.65
    v = base - 0.35 * noise - 0.02 * math.log(gamma) + bonus
    # a seed effect that differs per cell, so stds are non-zero and not all equal
    v += 0.004 * ((seed * 7 + salt * 3) % 5) - 0.01 * seed
    return float(min(max(v, 0.01), 0.99))


def _rows() -> tuple[list[dict], list[dict]]:
    two, one = [], []
    salt = 0
    common = {"sweep": "synthetic", "noise_type": "symmetric", "data_seed": 0, "n_train": 1000,
              "actual_noise": 0.0, "acc_many": 0.5, "acc_medium": 0.5, "acc_few": 0.5,
              "seconds": 1.0, "started": "2026-01-01T00:00:00Z", "host": "h", "version": "0"}  # fmt: skip
    for ds, gammas in GAMMAS.items():
        for g in gammas:
            for noise in NOISES:
                for seed in (0, 1):
                    for m, mb in SSL_BONUS.items():
                        for loss, lb in LOSS_BONUS.items():
                            salt += 1
                            epochs = [FINAL]
                            if (
                                ds == "cifar10"
                                and m == "simsiam"
                                and loss == "la+sl"
                                and noise == 0
                            ):
                                epochs = [200, 400, FINAL]
                            for ep in epochs:
                                shortfall = 0.1 * (FINAL - ep) / FINAL
                                two.append(dict(
                                    common, unit_key=f"t{len(two)}", stage="two-stage",
                                    pretrain_key=f"pt-{ds}-{m}-{g:g}", method=m, dataset=ds,
                                    gamma=g, noise=noise, loss=loss, head="full", seed=seed,
                                    epochs=10, pretrain_epochs=ep,
                                    acc=_acc(ds, g, noise, mb + lb - shortfall, seed, salt),
                                    knn_acc=0.7 - 0.05 * (FINAL - ep) / FINAL - 0.01 * math.log(g),
                                ))  # fmt: skip
                    for b, bonus in {"ce": -0.3, "la": -0.28, "sl": -0.25, "la+sl": -0.22,
                                     "elr": -0.1, "dividemix": -0.05}.items():  # fmt: skip
                        salt += 1
                        one.append(dict(
                            common, unit_key=f"s{len(one)}", stage="single-stage", method=b,
                            dataset=ds, gamma=g, noise=noise, loss=b, seed=seed, epochs=100,
                            acc=_acc(ds, g, noise, bonus * noise + 0.02, seed, salt),
                        ))  # fmt: skip
    for g, vals in {
        1.0: (0.73, 0.74, 0.71),
        50.0: (0.67, 0.64, 0.69),
        100.0: (0.65, 0.6, 0.68),
    }.items():
        for seed in (0, 1):
            for (stage, m, loss), v in zip(
                [("single-stage", "dividemix", "dividemix"), ("single-stage", "elr+", "elr+"),
                 ("two-stage", "simsiam", "la+sl")], vals, strict=True):  # fmt: skip
                row = dict(common, unit_key=f"c{len(one) + len(two)}", stage=stage, method=m,
                           dataset="clothing1m", gamma=g, noise=0.0, loss=loss, seed=seed,
                           epochs=10, acc=v + 0.01 * seed)  # fmt: skip
                if stage == "two-stage":
                    row.update(pretrain_key=f"pt-clothing1m-simsiam-{g:g}",
                               pretrain_epochs=FINAL, head="full", knn_acc=0.5)  # fmt: skip
                    two.append(row)
                else:
                    one.append(row)
    return two, one


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("report") / "run"
    two, one = _rows()
    write_rows(run / "results", "two", two)
    write_rows(run / "results", "one", one)
    write_rows(run / "results", "bad", [dict(two[0], unit_key="x", status="failed", acc=0.0)])
    return run


@pytest.fixture(scope="module")
def df(run_dir: Path) -> pd.DataFrame:
    return load_results(run_dir)


def _final(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["stage"] == "single-stage") | (df["pretrain_epochs"] == FINAL)]


def _png_ok(path: Path) -> None:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(raw) > 5_000
    img = imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200
    assert img[..., :3].std() > 0.01  # not a blank canvas


def _panel(fig, title_part: str):
    axes = [ax for ax in fig.axes if title_part in ax.get_title()]
    assert len(axes) == 1, [ax.get_title() for ax in fig.axes]
    return axes[0]


def _errorbar(ax, label: str) -> ErrorbarContainer:
    found = [
        c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.get_label() == label
    ]
    assert len(found) == 1, [c.get_label() for c in ax.containers]
    return found[0]


def _bars(c: ErrorbarContainer) -> np.ndarray:
    """Half-lengths of the vertical error bars of an errorbar line."""
    segs = c.lines[2][0].get_segments()
    return np.array([(s[1][1] - s[0][1]) / 2 for s in segs])


def test_fig3_gain_equals_mean_difference(df: pd.DataFrame, tmp_path: Path) -> None:
    fig = fig3_loss_gain(df)
    fig.savefig(tmp_path / "f3.png")
    _png_ok(tmp_path / "f3.png")
    ax = _panel(fig, "CIFAR-10, SimSiam")
    assert ax.get_xlabel() == "symmetric label noise (%)"
    assert "gain over CE" in ax.get_ylabel()

    cell = _final(df)
    cell = cell[(cell["dataset"] == "cifar10") & (cell["method"] == "simsiam")]
    cell = cell[(cell["gamma"] > 1) & (cell["noise"] == 0.2) & (cell["stage"] == "two-stage")]
    expected = 100 * (cell.loc[cell["loss"] == "la+sl", "acc"].mean()
                      - cell.loc[cell["loss"] == "ce", "acc"].mean())  # fmt: skip
    # std over seeds of the per-seed gain averaged over gammas
    per = cell.pivot_table(index=["seed", "gamma"], columns="loss", values="acc")
    per_seed = (100 * (per["la+sl"] - per["ce"])).groupby("seed").mean()

    data = fig.ltsweep_data
    row = data[(data["dataset"] == "cifar10") & (data["method"] == "simsiam")
               & (data["loss"] == "la+sl") & (data["noise"] == 0.2)]  # fmt: skip
    assert len(row) == 1
    assert row["mean"].iloc[0] == pytest.approx(expected, abs=1e-9)
    assert row["std"].iloc[0] == pytest.approx(per_seed.std(), abs=1e-9)
    assert row["gammas"].iloc[0] == "50, 100"
    # the drawn bar is that number, with that error bar
    bars = [c for c in ax.containers if isinstance(c, BarContainer) and c.get_label() == "LA+SL"]
    heights = [p.get_height() for p in bars[0].patches]
    assert heights[1] == pytest.approx(expected, abs=1e-9)  # noises 0, 0.2, ...: index 1
    seg = bars[0].errorbar.lines[2][0].get_segments()[1]
    assert (seg[1][1] - seg[0][1]) / 2 == pytest.approx(per_seed.std(), abs=1e-9)


def test_fig4_pairs_two_stage_byol_with_single_stage(df: pd.DataFrame, tmp_path: Path) -> None:
    fig = fig4_two_vs_single_stage(df)
    assert fig.ltsweep_method == "byol"
    fig.savefig(tmp_path / "f4.png")
    _png_ok(tmp_path / "f4.png")
    ax = _panel(fig, "CIFAR-100, gamma = 10")
    assert ax.get_ylabel() == "test accuracy (%)"
    # single-stage SL is drawn with the CE+SL colour and recorded under loss ce+sl
    data = fig.ltsweep_data
    sl = data[(data["stage"] == "single-stage") & (data["method"] == "sl")]
    assert set(sl["loss"]) == {"ce+sl"}
    rows = df[(df["method"] == "sl") & (df["dataset"] == "cifar100") & (df["gamma"] == 10)]
    line = _errorbar(ax, "single-stage SL")
    assert np.allclose(line.lines[0].get_ydata(), 100 * rows.groupby("noise")["acc"].mean())
    assert np.allclose(_bars(line), 100 * rows.groupby("noise")["acc"].std())
    assert "elr" not in set(data["method"])  # only the per-loss baselines


def test_fig5_lines_are_per_noise_means_with_std_bars(df: pd.DataFrame, tmp_path: Path) -> None:
    fig = fig5_methods_vs_noise(df)
    fig.savefig(tmp_path / "f5.png")
    _png_ok(tmp_path / "f5.png")
    ax = _panel(fig, "CIFAR-10, gamma = 50")
    assert ax.get_xlabel() == "symmetric label noise (%)"
    assert ax.get_ylabel() == "test accuracy (%)"
    rows = _final(df)
    rows = rows[(rows["dataset"] == "cifar10") & (rows["gamma"] == 50) & (rows["method"] == "simsiam")
                & (rows["loss"] == "la+sl")]  # fmt: skip
    stats = rows.groupby("noise")["acc"].agg(["mean", "std"]) * 100
    line = _errorbar(ax, "SimSiam + LA+SL")
    assert np.allclose(line.lines[0].get_xdata(), [0, 20, 60, 90])
    assert np.allclose(line.lines[0].get_ydata(), stats["mean"])
    assert np.allclose(_bars(line), stats["std"])
    dm = _errorbar(ax, "DivideMix (single-stage)")
    dm_rows = df[(df["dataset"] == "cifar10") & (df["gamma"] == 50) & (df["method"] == "dividemix")]
    assert np.allclose(dm.lines[0].get_ydata(), 100 * dm_rows.groupby("noise")["acc"].mean())
    assert len(fig.ltsweep_data) == len(
        fig.ltsweep_data.drop_duplicates(["dataset", "gamma", "stage", "method", "noise"])
    )


def test_table1_clothing1m(df: pd.DataFrame) -> None:
    t = table1_clothing1m(df)
    assert list(t.columns) == [1, 50, 100]
    assert list(t.index) == ["DivideMix", "ELR+", "SimSiam+LA+SL"]
    assert t.loc["SimSiam+LA+SL", 50] == pytest.approx(100 * (0.69 + 0.70) / 2)
    s = table1_clothing1m(df, with_std=True)
    assert s.loc["ELR+", 1].startswith("74.5 ± 0.7")


def test_fig6_pretrain_epochs(df: pd.DataFrame, tmp_path: Path) -> None:
    fig = fig6_pretrain_epochs(df)
    fig.savefig(tmp_path / "f6.png")
    _png_ok(tmp_path / "f6.png")
    assert (fig.ltsweep_dataset, fig.ltsweep_method, fig.ltsweep_noise) == (
        "cifar10",
        "simsiam",
        0.0,
    )
    assert [ax.get_xlabel() for ax in fig.axes] == ["self-supervised pre-training epochs"] * 2
    assert fig.axes[1].get_ylabel() == "kNN accuracy (%)"
    data = fig.ltsweep_data
    acc = data[(data["metric"] == "finetune_acc") & (data["gamma"] == 50)]
    assert list(acc["pretrain_epochs"]) == [200, 400, 800]
    rows = df[(df["dataset"] == "cifar10") & (df["method"] == "simsiam") & (df["gamma"] == 50)
              & (df["loss"] == "la+sl") & (df["noise"] == 0)]  # fmt: skip
    assert np.allclose(acc["mean"], 100 * rows.groupby("pretrain_epochs")["acc"].mean())
    knn = data[(data["metric"] == "knn_acc") & (data["gamma"] == 50)]
    assert list(knn["n"]) == [1, 1, 1]  # one encoder per epoch, not one per fine-tune
    assert knn["mean"].iloc[-1] == pytest.approx(100 * (0.7 - 0.01 * math.log(50)))


def test_missing_data_raises_clear_errors(df: pd.DataFrame) -> None:
    single = df[df["stage"] == "single-stage"]
    for fn in (fig3_loss_gain, fig4_two_vs_single_stage, fig6_pretrain_epochs):
        with pytest.raises(ValueError, match="no two-stage rows"):
            fn(single)
    with pytest.raises(ValueError, match="no two-stage rows"):
        fig5_methods_vs_noise(single)
    with pytest.raises(ValueError, match="no clothing1m rows"):
        table1_clothing1m(df[df["dataset"] != "clothing1m"])
    final = _final(df)
    with pytest.raises(ValueError, match="more than one pretrain_epochs"):
        fig6_pretrain_epochs(final)


def _blobs(n: int = 150, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dim)) * 4
    y = np.repeat(np.arange(3), n // 3)
    return centres[y] + rng.normal(size=(len(y), dim)), y


def test_tsne_keeps_classes_apart(tmp_path: Path) -> None:
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    fig = fig78_tsne({1.0: _blobs(), 100.0: _blobs(seed=1)}, max_points=120, seed=0)
    fig.savefig(tmp_path / "t.png")
    _png_ok(tmp_path / "t.png")
    assert [ax.get_xlabel() for ax in fig.axes] == ["t-SNE 1", "t-SNE 2"][:1] * 2
    data = fig.ltsweep_data
    assert len(data) == 240 and set(data["gamma"]) == {1.0, 100.0}
    for g in (1.0, 100.0):
        pts = data[data["gamma"] == g]
        score = cross_val_score(KNeighborsClassifier(5), pts[["x", "y"]], pts["label"], cv=3)
        assert score.mean() > 0.9
    assert (fig.ltsweep_summary["knn2d_acc"] > 0.9).all()


def test_paper_comparison(df: pd.DataFrame) -> None:
    cmp = compare_with_paper(df)
    dm = cmp[(cmp["dataset"] == "cifar10") & (cmp["method"] == "dividemix") & (cmp["gamma"] == 1)
             & (cmp["noise"] == 0.2)]  # fmt: skip
    ours = 100 * df[(df["dataset"] == "cifar10") & (df["method"] == "dividemix")
                    & (df["gamma"] == 1) & (df["noise"] == 0.2)]["acc"].mean()  # fmt: skip
    assert dm["paper_value"].iloc[0] == 95.7
    assert dm["ours"].iloc[0] == pytest.approx(ours)
    assert dm["diff"].iloc[0] == pytest.approx(ours - 95.7)
    # gamma not stated in the paper: matched to each imbalanced gamma, with a note
    ss = cmp[(cmp["dataset"] == "cifar10") & (cmp["method"] == "simsiam") & (cmp["noise"] == 0.9)
             & (cmp["kind"] == "value") & (cmp["paper"] == "88.1")]  # fmt: skip
    assert sorted(ss["gamma"]) == [50.0, 100.0]
    assert ss["note"].str.contains("gamma not stated").all()
    # a gain: two-stage BYOL LA+SL minus single-stage LA+SL
    gain = cmp[(cmp["dataset"] == "cifar100") & (cmp["method"] == "byol") & (cmp["noise"] == 0.6)]
    f = _final(df)
    cell = f[(f["dataset"] == "cifar100") & (f["gamma"] == 10) & (f["noise"] == 0.6)]
    ours = 100 * (cell[(cell["method"] == "byol") & (cell["loss"] == "la+sl")]["acc"].mean()
                  - cell[cell["method"] == "la+sl"]["acc"].mean())  # fmt: skip
    assert gain["ours"].iloc[0] == pytest.approx(ours)
    assert gain["diff"].iloc[0] == pytest.approx(ours - 24.0)
    # Clothing1M Table 1 and the lower bound
    c1 = cmp[(cmp["dataset"] == "clothing1m") & (cmp["method"] == "elr+") & (cmp["gamma"] == 100)]
    assert c1["diff"].iloc[0] == pytest.approx(60.5 - 59.6)
    lb = cmp[(cmp["kind"] == "at least") & (cmp["method"] == "simsiam")]
    assert lb["holds"].iloc[0] == (lb["ours"].iloc[0] >= 60)


def test_write_report(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import torch

    from ltsweep.store.cache import save_features

    # features for every SimSiam encoder except CIFAR-100's, in the real cache layout
    cache = tmp_path / "cache"
    for ds, gammas in [("cifar10", GAMMAS["cifar10"]), ("clothing1m", [1.0, 50.0, 100.0])]:
        for g in gammas:
            x, y = _blobs(90, 32, seed=int(g))
            save_features(cache, f"pt-{ds}-simsiam-{g:g}", FINAL, {
                "train": torch.zeros(3, 32), "train_labels": torch.zeros(3, dtype=torch.long),
                "test": torch.from_numpy(x).half(), "test_labels": torch.from_numpy(y),
            })  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps({"cache_dir": str(cache)}))

    index = write_report(run_dir, out_dir=tmp_path / "rep")
    assert capsys.readouterr().out == ""
    assert index == tmp_path / "rep" / "index.md"
    md = index.read_text()
    html = (tmp_path / "rep" / "index.html").read_text()
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    expected = [
        f"{n}.png"
        for n in FIGURE_NAMES
        if n.startswith("fig") and "tsne" not in n and n != "fig_pretrain_curves"
    ]
    expected += ["fig78_tsne_cifar10.png", "fig78_tsne_clothing1m.png"]
    assert pngs == sorted(expected)
    for p in pngs:
        _png_ok(tmp_path / "rep" / p)
    assert md.startswith("# synthetic\n")
    for name in [*FIGURE_NAMES, "fig78_tsne_cifar100"]:
        assert name in md and name in html, name
    assert "`fig78_tsne_cifar100`: no cached test features" in md
    assert html.count('src="data:image/png;base64,') == len(pngs)
    assert "<table" in html and "| LA+SL |" in md
    assert "Comparison with the paper" in md and "95.7" in md
    assert "Table 1" in md and "SimSiam+LA+SL" in md
    assert "1 failed units" in md
    assert "Left out (a single noise level): Clothing1M" in md  # Figs. 4-5


def test_write_report_skips_what_is_missing(tmp_path: Path) -> None:
    _, one = _rows()
    run = tmp_path / "run"
    write_rows(run / "results", "one", [r for r in one if r["dataset"] == "cifar10"])
    index = write_report(run)
    assert index == run / "report" / "index.md"
    md = index.read_text()
    assert list((run / "report").glob("*.png")) == []
    for name in ("fig3_loss_gain", "fig4_two_vs_single_stage", "fig5_methods_vs_noise",
                 "fig6_pretrain_epochs", "table1_clothing1m", "fig78_tsne"):  # fmt: skip
        assert f"`{name}`:" in md, name
    assert "no two-stage rows" in md

    empty = tmp_path / "empty"
    (empty / "results").mkdir(parents=True)
    md = write_report(empty).read_text()
    assert "No finished result rows yet" in md
    assert "<img" not in (empty / "report" / "index.html").read_text()


# ---------------------------------------------------------------------- pre-training curves


def _lines(fig) -> dict[str, tuple]:
    """label -> (colour, linestyle, marker) of every error-bar line of a figure."""
    from matplotlib.colors import to_hex

    out = {}
    for ax in fig.axes:
        for c in ax.containers:
            if isinstance(c, ErrorbarContainer):
                line = c.lines[0]
                out[c.get_label()] = (
                    to_hex(line.get_color()),
                    line.get_linestyle(),
                    line.get_marker(),
                )
    return out


def test_one_colour_and_style_per_method_and_loss_in_every_figure(df: pd.DataFrame) -> None:
    from matplotlib.colors import to_hex

    f4, f5 = _lines(fig4_two_vs_single_stage(df)), _lines(fig5_methods_vs_noise(df))
    # a single-stage baseline is the same line in Figs. 4 and 5
    for base in ("CE", "LA", "SL", "LA+SL"):
        assert f4[f"single-stage {base}"] == f5[f"{base} (single-stage)"], base
    # its colour is its loss's, in Fig. 3's bars too
    bars = {
        c.get_label(): to_hex(c.patches[0].get_facecolor())
        for ax in fig3_loss_gain(df).axes
        for c in ax.containers
        if isinstance(c, BarContainer)
    }
    assert bars["LA+SL"] == f4["two-stage BYOL, LA+SL"][0] == f4["single-stage LA+SL"][0]
    assert bars["CE+SL"] == f4["single-stage SL"][0]
    # every line of Fig. 5 has its own colour and style
    assert len(set(f5.values())) == len(f5)
    # and an SSL method keeps its colour when only part of the run is drawn
    only = fig5_methods_vs_noise(df[df["method"] != "simsiam"])
    assert _lines(only)["BYOL + LA+SL"] == f5["BYOL + LA+SL"]


def test_fig5_has_every_baseline_of_the_run(df: pd.DataFrame) -> None:
    extra = df[(df["method"] == "dividemix") & (df["dataset"] == "cifar10")].assign(
        method="elr+", unit_key=lambda d: d["unit_key"] + "+"
    )
    fig = fig5_methods_vs_noise(pd.concat([df, extra], ignore_index=True))
    names = set(_lines(fig))
    assert {"DivideMix (single-stage)", "ELR (single-stage)", "ELR+ (single-stage)"} <= names


def test_legends_stay_clear_of_titles(df: pd.DataFrame) -> None:
    for make in (fig3_loss_gain, fig4_two_vs_single_stage, fig5_methods_vs_noise,
                 fig6_pretrain_epochs):  # fmt: skip
        fig = make(df)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert legends, make.__name__
        titles = [fig._suptitle] + [ax.title for ax in fig.axes]
        for leg in legends:
            box = leg.get_window_extent(renderer)
            for t in titles:
                if t is not None and t.get_text():
                    assert not box.overlaps(t.get_window_extent(renderer)), make.__name__


def test_no_error_bar_for_a_single_row(df: pd.DataFrame) -> None:
    one_seed = df[df["seed"] == 0]
    fig = fig5_methods_vs_noise(one_seed)
    ax = _panel(fig, "CIFAR-10, gamma = 50")
    line = _errorbar(ax, "SimSiam + LA+SL")
    assert line.has_yerr is False or all(len(s) == 0 for s in line.lines[2][0].get_segments())
    bars = [
        c for ax in fig3_loss_gain(one_seed).axes for c in ax.containers
        if isinstance(c, BarContainer)
    ]  # fmt: skip
    assert all(b.errorbar is None for b in bars)
    # with two seeds in some cells only: bars there, none where n = 1
    mixed = df[(df["seed"] == 0) | (df["noise"] == 0.2)]
    ax = _panel(fig5_methods_vs_noise(mixed), "CIFAR-10, gamma = 50")
    segs = _errorbar(ax, "SimSiam + LA+SL").lines[2][0].get_segments()
    assert [len(s) > 0 for s in segs] == [False, True, False, False]


def test_report_formats_dpi_and_several_runs(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    write_report(run_dir, out, formats=("png", "pdf", "svg"), dpi=60, tsne_points=100)
    figs = [p.stem for p in out.glob("fig*.png")]
    assert figs
    for stem in figs:
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        assert b"<svg" in (out / f"{stem}.svg").read_bytes()[:2000]
    md = (out / "index.md").read_text()
    assert "Also as: [PDF](fig3_loss_gain.pdf), [SVG](fig3_loss_gain.svg)" in md
    small = imread(out / "fig5_methods_vs_noise.png").shape
    write_report(run_dir, out, formats=("png",), dpi=120, tsne_points=100)
    big = imread(out / "fig5_methods_vs_noise.png").shape
    assert big[1] == pytest.approx(small[1] * 2, rel=0.02)
    assert not list(out.glob("*.pdf")) and not list(out.glob("*.svg"))  # stale files go
    # SVG only: the pages embed the SVG
    write_report(run_dir, out, formats=("svg",), tsne_points=100)
    assert 'src="data:image/svg+xml;base64,' in (out / "index.html").read_text()
    with pytest.raises(ValueError, match="jpg"):
        write_report(run_dir, out, formats=("jpg",))

    # two runs: their tables combined, a unit stored by both counted once
    other = tmp_path / "other"
    two, _ = _rows()
    extra = [dict(r, unit_key=f"o{i}", seed=r["seed"] + 2) for i, r in enumerate(two[:40])]
    write_rows(other / "results", "two", extra + two[:5])  # the first 5 units are in both
    both = tmp_path / "both"
    with pytest.raises(ValueError, match="output folder"):
        write_report([run_dir, other])
    md = write_report([run_dir, other], both, tsne_points=100).read_text()
    assert f"`{run_dir}`: {len(load_results(run_dir))} result rows" in md
    assert f"`{other}`: 40 result rows" in md
    from ltsweep.report.build import load_runs

    combined = load_runs([run_dir, other])
    assert len(combined) == len(load_results(run_dir)) + 40
    assert set(combined["run"]) == {str(run_dir), str(other)}


def test_a_missing_run_folder_is_an_error_not_an_empty_report(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        write_report(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
    started = tmp_path / "started"  # a run that has stored nothing yet: an empty report
    started.mkdir()
    (started / "sweep.yaml").write_text("name: started\n")
    assert "No finished result rows yet" in write_report(started).read_text()


def test_cli_report_flags(run_dir: Path, tmp_path: Path) -> None:
    from ltsweep.cli import build_parser

    args = build_parser().parse_args(
        ["report", str(run_dir), str(tmp_path), "--format", "png,pdf", "--dpi", "200"]
    )
    assert args.run_dir == [str(run_dir), str(tmp_path)]
    assert (args.format, args.dpi) == ("png,pdf", 200)


def test_pretrain_curves_figure(tmp_path: Path) -> None:
    from ltsweep.report.figures import fig_pretrain_curves
    from ltsweep.report.tables import figure_table

    rows = []
    for g in (1.0, 10.0):
        for seed in (0, 1):
            for epoch in range(1, 9):
                rows.append({"pretrain_key": f"k{g}{seed}", "method": "simsiam",
                             "dataset": "cifar10", "gamma": g, "data_seed": seed, "epochs": 8,
                             "epoch": epoch, "loss": -0.1 * epoch - 0.01 * seed,
                             "knn_acc": 0.05 * epoch if epoch % 4 == 0 else np.nan,
                             "lr": 0.1})  # fmt: skip
    fig = fig_pretrain_curves(pd.DataFrame(rows))
    fig.savefig(tmp_path / "c.png")
    _png_ok(tmp_path / "c.png")
    data = fig.ltsweep_data
    knn = data[(data["metric"] == "knn_acc") & (data["gamma"] == 10)]
    assert list(knn["epoch"]) == [4, 8] and knn["mean"].iloc[-1] == pytest.approx(40.0)
    loss = data[(data["metric"] == "loss") & (data["gamma"] == 1) & (data["epoch"] == 8)]
    assert loss["mean"].iloc[0] == pytest.approx(-0.805) and loss["n"].iloc[0] == 2
    table = figure_table("fig_pretrain_curves", fig)
    assert list(table["kNN % last"]) == ["40.0", "40.0"] and list(table["epochs"]) == [8, 8]
    with pytest.raises(ValueError, match="no pre-training epochs"):
        fig_pretrain_curves(pd.DataFrame(rows).iloc[:0])


def test_real_noisy_labels_show_at_their_measured_noise(tmp_path: Path) -> None:
    """A CIFAR-N run's grid noise is a placeholder 0: its rows appear at the rate measured on
    their labels in the pivot, the figures and the summary, and are not compared with the
    paper's clean numbers."""
    common = {"sweep": "n", "noise_type": "cifar-n", "noise": 0.0, "data_seed": 0, "seed": 0,
              "n_train": 12406, "actual_noise": 0.40236, "acc_many": 0.5, "acc_medium": 0.5,
              "acc_few": 0.5, "seconds": 1.0, "started": "2026-01-01T00:00:00Z", "host": "h",
              "version": "0", "dataset": "cifar10", "gamma": 1.0}  # fmt: skip
    rows = [
        dict(common, unit_key=f"t{i}", stage="two-stage", pretrain_key="p", method="barlow",
             loss=loss, head="last", epochs=10, pretrain_epochs=50, acc=0.3 + 0.01 * i)
        for i, loss in enumerate(["ce", "la+sl"])
    ] + [dict(common, unit_key="s0", stage="single-stage", method="ce", loss="ce", epochs=60,
              acc=0.25)]  # fmt: skip
    write_rows(tmp_path / "results", "rows", rows)
    df = load_results(tmp_path)
    ((name, table),) = pivot_tables(df)
    assert [c for c in table.columns if c.endswith("%")] == ["40.2%"]
    assert list(table["40.2%"]) == ["30.0", "31.0", "25.0"]
    lines = summary_lines(df, 0)
    assert "noise 40.2 %" in lines[1] and any("CIFAR-N" in line for line in lines)
    fig = fig5_methods_vs_noise(df)
    assert sorted(set(fig.ltsweep_data["noise"])) == [pytest.approx(0.402)]
    assert compare_with_paper(df).empty  # the paper has no 40.2 % cell
    # the same rows taken at their grid's 0 % would be set against the paper's clean figure
    assert not compare_with_paper(df.assign(noise_type="symmetric")).empty
