"""`ltsweep report RUN_DIR...`: every figure the results support, as Markdown and as one HTML file.

Writes `<run>/report/` (or `out_dir`): each figure as PNG (and PDF / SVG when asked, at a
chosen dpi), `index.md` (figures with the table of the numbers each one plots, the accuracy
pivot, Table 1, the comparison with the paper, and the figures that were skipped and why) and
`index.html`, the same content with the images embedded as base64 data URIs so the single
file can be mailed or attached to an issue. Several run folders make one report of their
combined results tables (a unit stored by two runs, through a shared cache, counts once).

A half-finished sweep still gets a report: a figure whose data is missing is listed under
"Skipped" with the reason instead of failing the whole report, and nothing is printed (the
CLI decides what to say). Files are written atomically, so a reader never sees half a page.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ltsweep.planning.pretrains import load_pretrains
from ltsweep.report import figures as F
from ltsweep.report.claims import CLAIMS_METHOD, claims_table, verdicts
from ltsweep.report.document import Document
from ltsweep.report.figures import FIGURE_NAMES
from ltsweep.report.paper import compare_with_paper
from ltsweep.report.tables import comparison_table, figure_table, pivot_tables, summary_lines
from ltsweep.store.atomic import atomic_path, write_text
from ltsweep.store.cache import default_cache_dir, features_ready, load_features, run_cache_dir
from ltsweep.store.results import SCHEMA, load_results

__all__ = ["write_report", "load_runs", "tsne_features", "FIGURE_NAMES", "FORMATS"]

#: the file formats a figure can be written in
FORMATS = ("png", "pdf", "svg")


# ---------------------------------------------------------------------------- t-SNE inputs


def tsne_features(
    df: pd.DataFrame, run_dir: str | Path, cache_dir: str | Path | None = None
) -> tuple[
    dict[str, tuple[str, dict[float, tuple[np.ndarray, np.ndarray]]]], list[tuple[str, str]]
]:
    """Frozen test features for Figs. 7-8: per dataset, (SSL method, {gamma: (X, y)}).

    One encoder per gamma, as in the paper: the first SSL method of `SSL_ORDER` present
    (SimSiam), its longest pre-training, its lowest data seed; features come from the feature
    cache (`cache_dir`, else the one recorded in the run folder, else the default beside
    the runs). Also returns (figure name, reason) for what could not be loaded, so the
    report can say why a t-SNE is missing instead of failing.
    """
    two = df[(df["stage"] == "two-stage") & df["pretrain_key"].notna()]
    if two.empty:
        return {}, [("fig78_tsne", "no two-stage rows, so no pre-trained encoder to project")]
    caches: dict[str, Path | str] = {}

    def cache_of(row: pd.Series) -> Path | str:
        run = str(row["run"]) if "run" in row and isinstance(row["run"], str) else str(run_dir)
        if run not in caches:
            caches[run] = _cache_dir(Path(run), cache_dir)
        return caches[run]

    found: dict[str, tuple[str, dict[float, tuple[np.ndarray, np.ndarray]]]] = {}
    skipped: list[tuple[str, str]] = []
    for ds in F.ordered(two["dataset"].tolist(), ("cifar10", "clothing1m", "cifar100")):
        sub = two[two["dataset"] == ds]
        method = F.ordered(sub["method"].tolist(), F.SSL_ORDER)[0]
        sub = sub[sub["method"] == method]
        feats: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        missing = []
        for g in sorted(sub["gamma"].unique()):
            rows = sub[sub["gamma"] == g]
            rows = rows[rows["pretrain_epochs"] == rows["pretrain_epochs"].max()]
            row = rows.sort_values(["data_seed", "pretrain_key"]).iloc[0]
            key, epoch = row["pretrain_key"], int(row["pretrain_epochs"])
            cache = cache_of(row)
            if isinstance(cache, str):
                missing.append(f"gamma={F.fmt_num(g)}: {cache}")
                continue
            if not features_ready(cache, key, epoch):
                missing.append(f"gamma={F.fmt_num(g)}: none for {key} epoch {epoch}")
                continue
            try:
                got = load_features(cache, key, epoch)
                feats[float(g)] = (_numpy(got["test"]), _numpy(got["test_labels"]))
            except (OSError, KeyError, RuntimeError, ValueError) as err:
                missing.append(f"gamma={F.fmt_num(g)}: {type(err).__name__}: {err}")
        name = f"fig78_tsne_{ds}"
        if feats:
            found[ds] = (method, feats)
            if missing:
                skipped.append((name, "some gammas without features: " + "; ".join(missing)))
        else:
            where = ", ".join(sorted({str(c) for c in caches.values()}))
            skipped.append((name, f"no cached test features in {where}: " + "; ".join(missing)))
    return found, skipped


def pretrain_curves(runs: Sequence[Path]) -> tuple[pd.DataFrame | None, str]:
    """The per-epoch pre-training table of the runs (`ltsweep.load_pretrains`), or None and
    why it is not there."""
    frames, reasons = [], []
    for run in runs:
        try:
            frames.append(load_pretrains(run))
        except Exception as err:  # noqa: BLE001 - a run without curves is a skip, not a crash
            reasons.append(f"{run}: {type(err).__name__}: {err}")
    frames = [f for f in frames if not f.empty]
    if not frames:
        why = "no pre-training epochs recorded" + (f" ({'; '.join(reasons)})" if reasons else "")
        return None, why
    curves = pd.concat(frames, ignore_index=True)
    return curves.drop_duplicates(["pretrain_key", "epoch"]).reset_index(drop=True), ""


def _cache_dir(run_dir: Path, cache_dir: str | Path | None) -> Path | str:
    """The feature cache, or a string saying why it cannot be found."""
    if cache_dir is not None:
        return Path(cache_dir)
    reasons = []
    for fn in (run_cache_dir, default_cache_dir):
        try:
            return Path(fn(run_dir))
        except Exception as err:  # noqa: BLE001 - any failure to locate the cache is a skip
            reasons.append(f"{fn.__name__}: {type(err).__name__}: {err}")
    return "cannot locate the feature cache (" + "; ".join(reasons) + ")"


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
        return x.numpy()
    return np.asarray(x)


# ---------------------------------------------------------------------------- the report


def _sweep_name(df: pd.DataFrame, runs: Sequence[Path]) -> str:
    names = [s for s in df["sweep"].dropna().unique() if s] if "sweep" in df else []
    return ", ".join(sorted(names)) if names else ", ".join(r.resolve().name for r in runs)


def _run_list(run_dir: str | Path | Sequence[str | Path]) -> list[Path]:
    runs = [Path(run_dir)] if isinstance(run_dir, str | Path) else [Path(r) for r in run_dir]
    if not runs:
        raise ValueError("no run folder given")
    for run in runs:
        if not (run / "results").is_dir() and not (run / "sweep.yaml").is_file():
            raise FileNotFoundError(
                f"{run}: not a run folder (no sweep.yaml, no results/); "
                "give the folder `ltsweep run` wrote (runs/<sweep name>)"
            )
    return runs


def load_runs(
    run_dir: str | Path | Sequence[str | Path], include_failed: bool = False
) -> pd.DataFrame:
    """The results tables of one or several run folders, combined, with a `run` column.

    A unit stored by several runs (the same key: through a shared cache they ran it once, or
    each ran the same unit) is kept once, from the first run that has it; a unit that failed
    in one run and succeeded in another counts as its success. Raises FileNotFoundError for
    a folder that is not a run folder, rather than reporting zero rows.
    """
    frames = []
    for run in _run_list(run_dir):
        if (run / "results").is_dir():
            df = load_results(run, include_failed=include_failed)
        else:  # started, nothing stored yet: no rows
            df = SCHEMA.empty_table().to_pandas()
        frames.append(df.assign(run=str(run)))
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(frames) > 1 and not df.empty:
        ok_first = df["status"].ne("ok").astype(int)  # a success wins over a failure
        df = df.assign(_ok=ok_first).sort_values("_ok", kind="stable")
        df = df.drop_duplicates("unit_key").sort_index().drop(columns="_ok")
    return df.reset_index(drop=True)


_TITLES = {
    "fig3_loss_gain": "Fig. 3: gain of CE+SL, LA and LA+SL over CE (two-stage)",
    "fig4_two_vs_single_stage": "Fig. 4: two-stage vs single-stage training",
    "fig5_methods_vs_noise": "Fig. 5: SSL methods and baselines vs noise",
    "fig6_pretrain_epochs": "Fig. 6: fine-tuned and kNN accuracy vs pre-training epochs",
}
_WHAT = {
    "fig3_loss_gain": "Accuracy points gained over CE fine-tuning, averaged over gamma > 1, "
    "mean ± std over seeds.",
    "fig4_two_vs_single_stage": "Accuracy (%) per noise level; two-stage with one SSL method "
    "vs single-stage from scratch, same loss.",
    "fig5_methods_vs_noise": "Accuracy (%) per noise level; two-stage rows fine-tuned with "
    "LA+SL, single-stage baselines as trained.",
    "fig6_pretrain_epochs": "Accuracy (%) per pre-training length (columns: epochs).",
}


@dataclass
class _Page:
    """What the report's sections share: the rows, the document and what was written or skipped."""

    out: Path
    runs: list[Path]
    df: pd.DataFrame
    doc: Document
    formats: list[str]
    dpi: float
    skipped: list[tuple[str, str]] = field(default_factory=list)
    caught: list[str] = field(default_factory=list)
    written: set[str] = field(default_factory=set)

    def attempt(self, fig_name: str, make: Callable[[], Any]) -> Any:
        """`make()`, or None with the reason recorded under Skipped; warnings are collected."""
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            try:
                return make()
            except ValueError as err:
                self.skipped.append((fig_name, str(err)))
            except Exception as err:  # noqa: BLE001 - one broken figure must not sink the report
                self.skipped.append((fig_name, f"error: {type(err).__name__}: {err}"))
            finally:
                for w in got:
                    msg = f"{fig_name}: {w.category.__name__}: {w.message}"
                    if msg not in self.caught:
                        self.caught.append(msg)
        return None

    def add_figure(self, fig_name: str, title: str, what: str, fig: Figure | None) -> None:
        """Save `fig` in every format and put it on the page with its table of numbers."""
        if fig is None:
            return
        files = [f"{fig_name}.{fmt}" for fmt in self.formats]
        for file, fmt in zip(files, self.formats, strict=True):
            with atomic_path(self.out / file) as tmp:
                fig.savefig(tmp, format=fmt, dpi=self.dpi)
            self.written.add(file)
        self.doc.h(3, f"{title} (`{fig_name}`)")
        self.doc.image(files[0], title, width_in=float(fig.get_figwidth()))
        if len(files) > 1:
            self.doc.links("Also as", [(f.rsplit(".", 1)[1].upper(), f) for f in files[1:]])
        if what:
            self.doc.p(what)
        table = self.attempt(fig_name, lambda: figure_table(fig_name, fig))
        if table is not None:
            self.doc.table(table)


def write_report(
    run_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    *,
    tsne_points: int = 2000,
    formats: Sequence[str] = ("png",),
    dpi: float = 100,
    source: str | None = None,
) -> Path:
    """Write the report of one run folder, or of several combined, and return its `index.md`.

    `out_dir` defaults to `<run_dir>/report` (required for several runs); `cache_dir` (for
    the t-SNE features) defaults to each run's own (`ltsweep.store.cache.run_cache_dir`).
    `formats`: any of png, pdf, svg; the pages show the PNG (the SVG without a PNG; a PNG is
    written for them if neither is asked for). `source`: what the page names as its origin
    instead of the run folders (a report rebuilt from a stored results table). Prints
    nothing; warnings raised while drawing are collected into the report instead of
    reaching the terminal. A folder that is not a run folder raises FileNotFoundError.
    """
    runs = _run_list(run_dir)
    formats = _formats(formats)
    if not dpi > 0:
        raise ValueError(f"dpi: {dpi} is not > 0")
    if out_dir is None and len(runs) > 1:
        raise ValueError("a report of several runs needs an output folder (out_dir / --out)")
    out = Path(out_dir) if out_dir is not None else runs[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    page = _Page(out, runs, load_runs(runs), Document(out), formats, dpi)
    everything = load_runs(runs, include_failed=True)
    n_failed = int((everything["status"] == "failed").sum()) if not everything.empty else 0
    name = _sweep_name(page.df, runs)

    _header(page, name, source)
    _summary(page, n_failed)
    if not page.df.empty:
        _claims(page)
        _figures(page)
        _pretrain_curves(page)
        _tsne(page, cache_dir, tsne_points)
        _table1(page)
        _pivot(page)
        _paper_comparison(page)
    _skipped(page)
    return _write(page, name)


def _formats(formats: Sequence[str]) -> list[str]:
    """The asked formats, the shown one (PNG, else SVG) first."""
    formats = [f.lower().lstrip(".") for f in formats]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"figure formats: {', '.join(unknown) or '(none)'} not in {FORMATS}")
    shown = "png" if "png" in formats else ("svg" if "svg" in formats else "png")
    return list(dict.fromkeys([shown, *formats]))


def _header(page: _Page, name: str, source: str | None) -> None:
    doc, runs, df = page.doc, page.runs, page.df
    doc.h(1, name)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if source is not None:
        doc.p(f"Report of {source}, generated {stamp}.")
    elif len(runs) == 1:
        doc.p(f"Report of run folder `{runs[0]}`, generated {stamp}.")
    else:
        doc.p(f"Report of {len(runs)} run folders combined, generated {stamp}:")
        counts = df["run"].value_counts() if not df.empty else pd.Series(dtype=int)
        doc.items(f"`{r}`: {int(counts.get(str(r), 0))} result rows" for r in runs)


def _summary(page: _Page, n_failed: int) -> None:
    page.doc.h(2, "Summary")
    if page.df.empty:
        page.doc.p(
            "No finished result rows yet." + (f" {n_failed} failed units." if n_failed else "")
        )
        page.skipped.extend((fig_name, "no result rows") for fig_name in FIGURE_NAMES)
    else:
        page.doc.items(summary_lines(page.df, n_failed))


def _claims(page: _Page) -> None:
    """Each claim of the paper with the verdict the rows give it (`ltsweep.report.claims`)."""
    found = page.attempt("claims", lambda: verdicts(page.df))
    page.doc.h(2, "Claims of the paper")
    if found is None:
        page.doc.p("The claims could not be computed (see Skipped).")
        return
    page.doc.p(CLAIMS_METHOD)
    page.doc.table(claims_table(found))


def _figures(page: _Page) -> None:
    page.doc.h(2, "Figures")
    makers: Mapping[str, Callable[[pd.DataFrame], Figure]] = {
        "fig3_loss_gain": F.fig3_loss_gain,
        "fig4_two_vs_single_stage": F.fig4_two_vs_single_stage,
        "fig5_methods_vs_noise": F.fig5_methods_vs_noise,
        "fig6_pretrain_epochs": F.fig6_pretrain_epochs,
    }
    for fig_name, make in makers.items():
        fig = page.attempt(fig_name, lambda make=make: make(page.df))
        what = _WHAT[fig_name]
        if fig is not None and fig_name == "fig4_two_vs_single_stage":
            what += f" Two-stage method: {F.label(fig.ltsweep_method)}."
        if fig is not None and getattr(fig, "ltsweep_dropped", None):
            left_out = ", ".join(F.dataset_label(d) for d in fig.ltsweep_dropped)
            what += f" Left out (a single noise level): {left_out}."
        if fig is not None and fig_name == "fig6_pretrain_epochs":
            what += f" {F.dataset_label(fig.ltsweep_dataset)}, {F.label(fig.ltsweep_method)}."
        page.add_figure(fig_name, _TITLES[fig_name], what, fig)


def _pretrain_curves(page: _Page) -> None:
    curves, why = pretrain_curves(page.runs)
    if curves is None:
        page.skipped.append(("fig_pretrain_curves", why))
        return
    fig = page.attempt("fig_pretrain_curves", lambda: F.fig_pretrain_curves(curves))
    page.add_figure(
        "fig_pretrain_curves",
        "Pre-training curves: SSL loss and kNN monitor per epoch",
        "Not a figure of the paper: whether the encoders converged. Mean over data "
        "seeds; the table gives the first and the last recorded epoch.",
        fig,
    )


def _tsne(page: _Page, cache_dir: str | Path | None, tsne_points: int) -> None:
    feats, tsne_skips = tsne_features(page.df, page.runs[0], cache_dir)
    page.skipped.extend(tsne_skips)
    for ds, (method, by_gamma) in feats.items():
        fig_name = f"fig78_tsne_{ds}"
        number = {"cifar10": "Fig. 7", "clothing1m": "Fig. 8"}.get(ds, "Figs. 7-8")
        title = f"{number}: t-SNE of frozen {F.label(method)} test features, {F.dataset_label(ds)}"
        fig = page.attempt(
            fig_name,
            lambda b=by_gamma, t=title: F.fig78_tsne(b, max_points=tsne_points, title=t),
        )
        page.add_figure(fig_name, title, "Separability of the classes on each map:", fig)


def _table1(page: _Page) -> None:
    table1 = page.attempt(
        "table1_clothing1m", lambda: F.table1_clothing1m(page.df, with_std=True).reset_index()
    )
    if table1 is not None:
        page.doc.h(2, "Table 1: Clothing1M accuracy (%) by gamma (`table1_clothing1m`)")
        page.doc.table(table1.rename(columns=lambda c: c if c == "method" else f"gamma={c}"))


def _pivot(page: _Page) -> None:
    page.doc.h(2, "Accuracy (%) by (stage, method, gamma, loss) x noise")
    page.doc.p("Mean ± std over seeds and data seeds; one table per dataset.")
    for ds, table in pivot_tables(page.df):
        page.doc.h(3, F.dataset_label(ds))
        page.doc.table(table)


def _paper_comparison(page: _Page) -> None:
    page.doc.h(2, "Comparison with the paper")
    cmp = page.attempt("paper comparison", lambda: compare_with_paper(page.df))
    if cmp is not None and not cmp.empty:
        page.doc.p(
            "Paper numbers in %; `diff` = ours - paper (for a range, the distance to "
            "the nearest end, 0 inside; for a bound, ours - bound)."
        )
        page.doc.table(comparison_table(cmp))
    else:
        page.doc.p("No cell of this run matches a number published in the paper.")


def _skipped(page: _Page) -> None:
    page.doc.h(2, "Skipped")
    if page.skipped:
        page.doc.items(f"`{n}`: {reason}" for n, reason in page.skipped)
    else:
        page.doc.p("Nothing: every figure was drawn.")
    if page.caught:
        page.doc.h(2, "Warnings while drawing")
        page.doc.items(page.caught)


def _write(page: _Page, name: str) -> Path:
    """Drop figures of an earlier report that this one did not draw; write both pages."""
    for old in page.out.glob("fig*.*"):
        if old.suffix.lstrip(".") in FORMATS and old.name not in page.written:
            old.unlink(missing_ok=True)
    index = page.out / "index.md"
    write_text(index, page.doc.markdown())
    write_text(page.out / "index.html", page.doc.html(name))
    return index
