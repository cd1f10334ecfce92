"""The paper's claims as data, and each claim's verdict computed from a run's rows.

A reproduction is read claim by claim, not from prose: `CLAIMS` holds one row per claim of
Karthik et al. (2021) (what is compared, on which cells, in which direction, the paper's own
numbers, its figure or section), and `verdicts(df)` says for each one whether the run's rows
support it: "holds", "does not hold", or "not measured" (naming the cells that are missing),
with the numbers and the seeds behind them.

How a claim is measured, and why:
- `ge` (A >= B) and `best` (A above every alternative) compare accuracies as a difference in
  points. Both sides share the chance level (1 / C), so the sign and size of a difference are
  the same above chance.
- `grows` (A's advantage over B grows with noise) compares the ratio of accuracies above
  chance, (A - 1/C) / (B - 1/C), between the lowest and the highest noise level. A difference
  in points shrinks by itself as both sides fall toward chance; a ratio above chance does
  not, so a gap that only narrows because both collapse is not read as a trend.
- `at_least` compares A with a published bound, in %.
Each comparison is made per cell (data set, gamma, noise level and the methods or losses the
claim ranges over), on the mean over the rows of the cell. With two or more seeds, a cell's
difference is "beyond the spread" when it exceeds the standard deviation of the per-seed
differences (the rows paired by seed and data seed); with one seed the spread is unknown.
Noise levels are the measured ones for real noisy labels (CIFAR-N), the nominal ones else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from ltsweep.report.figures import final_encoders, fmt_num, label
from ltsweep.report.figures.base import SINGLE_STAGE_LOSS, dataset_label, ok_rows

__all__ = [
    "CLAIMS",
    "CLAIMS_METHOD",
    "Claim",
    "Side",
    "Verdict",
    "NUM_CLASSES",
    "HOLDS",
    "FAILS",
    "UNMEASURED",
    "verdicts",
    "claims_table",
]

HOLDS, FAILS, UNMEASURED = "holds", "does not hold", "not measured"
#: how the verdicts are reached, for the page that shows them
CLAIMS_METHOD = (
    "Each claim of the paper checked on this run's rows (`ltsweep.report.claims.CLAIMS`): "
    "*holds* when every compared cell goes the paper's way (`best`: the share of cells "
    "stated), *does not hold* otherwise, *not measured* when the run lacks the cells (named). "
    "A and B are the two sides the claim compares. Differences are in accuracy points, the "
    "same above chance since both sides share it; a trend (`grows`) compares the ratio of the "
    "accuracies above chance, (A - 1/C) / (B - 1/C), at the lowest and the highest noise "
    "level, so a gap that narrows only because both sides fall toward chance is not a trend. "
    "With two or more seeds, a cell is beyond the seed spread when its difference exceeds "
    "the standard deviation of the per-seed differences; with one seed the spread is unknown."
)
#: classes per data set: chance is 1 / C
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "clothing1m": 14, "digits": 10}
#: the paper's head switch (Sec. 3.2): above this noise only the last FC is fine-tuned
HEAD_SWITCH = {"simsiam": 0.6, "byol": 0.4, "barlow": 0.2}
#: a `Side` field set to EACH ranges over every value the run has, one cell per value
EACH = "*"
_SINGLE_LOSSES = tuple(SINGLE_STAGE_LOSS)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: the rows of a stage, method, fine-tune loss and head."""

    stage: Literal["two-stage", "single-stage"]
    method: str | tuple[str, ...] = EACH  # a name, several (each its own cell), or EACH
    loss: str | None = None  # two-stage fine-tune loss; None: any
    head: str | None = None  # two-stage head (full | last | linear); None: any

    def text(self) -> str:
        if self.method == EACH:
            who = "each SSL method" if self.stage == "two-stage" else "each baseline"
        elif isinstance(self.method, tuple):
            who = " / ".join(label(m) for m in self.method)
        else:
            who = label(self.method)
        if self.stage == "single-stage":
            return f"single-stage {who}"
        parts = [f"two-stage {who}"]
        if self.loss == EACH:
            parts.append("each loss")
        elif self.loss:
            parts.append(label(self.loss))
        if self.head:
            parts.append(f"head {self.head}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, as a comparison the results table can decide."""

    id: str
    says: str  # the claim, in the paper's terms
    kind: Literal["ge", "best", "grows", "at_least"]
    a: Side
    b: Side | None = None  # ge / grows: the other side; best: the alternatives
    #: columns whose values pair an A cell with a B cell (besides data set, gamma, noise)
    same: tuple[str, ...] = ()
    noise: tuple[float, float] = (0.0, 1.0)  # the noise levels the claim is about, inclusive
    noise_text: str = "every noise level"
    #: "imbalanced": every gamma > 1; "largest": each data set's largest gamma (> 1)
    gamma: Literal["imbalanced", "largest", "any"] = "imbalanced"
    datasets: tuple[str, ...] = ()  # empty: any
    head_switch: Literal["above", "at_or_below", ""] = ""  # noise relative to HEAD_SWITCH
    bound: float | None = None  # at_least: in %
    share: float = 1.0  # best: the share of cells where A must be best
    paper: str = ""  # the paper's own numbers, where it gives them
    source: str = ""  # its figure, table or section

    @property
    def measure(self) -> str:
        return {
            "ge": "A - B, points (= above chance)",
            "best": "A - best other, points (= above chance)",
            "grows": "(A - 1/C) / (B - 1/C), last vs first noise",
            "at_least": "A, % (vs the bound)",
        }[self.kind]


_LASL = "la+sl"
_TWO = Side("two-stage", EACH, _LASL)

CLAIMS: tuple[Claim, ...] = (
    Claim(
        "two-stage-beats-single-stage-at-80",
        "Two-stage (LA+SL) beats single-stage training from scratch at 80 % noise, "
        "for each SSL method",
        "ge",
        _TWO,
        Side("single-stage", _LASL),
        noise=(0.8, 0.8),
        noise_text="80 % noise",
        paper="two-stage ahead by a large margin once labels are noisy; +24 on CIFAR-100, "
        "gamma 10, 60 % noise (BYOL)",
        source="Fig. 4, Sec. 3.4",
    ),
    Claim(
        "two-stage-beats-single-stage-when-noisy",
        "Two-stage beats single-stage with the same loss at every noise level > 0",
        "ge",
        Side("two-stage", EACH, EACH),
        Side("single-stage", _SINGLE_LOSSES),
        same=("pair_loss",),
        noise=(0.05, 1.0),
        noise_text="noise > 0",
        paper="'as soon as labels get noisy ... even at very low noise levels'",
        source="Fig. 4, Sec. 3.4",
    ),
    Claim(
        "two-stage-lead-grows-with-noise",
        "Two-stage's lead over single-stage (same loss) grows with noise",
        "grows",
        Side("two-stage", EACH, EACH),
        Side("single-stage", _SINGLE_LOSSES),
        same=("pair_loss",),
        paper="single-stage on par or slightly better without noise, two-stage far ahead with it",
        source="Fig. 4, Sec. 3.4",
    ),
    Claim(
        "la-sl-beats-ce",
        "LA+SL fine-tuning beats CE at every noise level >= 20 %",
        "ge",
        _TWO,
        Side("two-stage", EACH, "ce"),
        same=("method",),
        noise=(0.2, 1.0),
        noise_text="noise >= 20 %",
        paper="gains over CE 'can reach over 10 %'",
        source="Fig. 3, Sec. 3.4",
    ),
    Claim(
        "la-sl-is-the-best-loss",
        "LA+SL is the best of the four fine-tune losses (almost always: >= 3/4 of the cells)",
        "best",
        _TWO,
        Side("two-stage", EACH, EACH),
        same=("method",),
        share=0.75,
        paper="'combining LA+SL almost always achieves the best performance'",
        source="Fig. 3, Sec. 3.4",
    ),
    Claim(
        "sl-gain-grows-with-noise",
        "The gain of SuperLoss (CE+SL over CE) grows with noise",
        "grows",
        Side("two-stage", EACH, "ce+sl"),
        Side("two-stage", EACH, "ce"),
        same=("method",),
        paper="SL 'prevents the memorization of noisy labels'",
        source="Fig. 3, Sec. 2.3",
    ),
    Claim(
        "sl-gain-grows-with-noise-on-la",
        "The gain of SuperLoss on LA (LA+SL over LA) grows with noise",
        "grows",
        _TWO,
        Side("two-stage", EACH, "la"),
        same=("method",),
        paper="SL 'prevents the memorization of noisy labels'",
        source="Fig. 3, Sec. 2.3",
    ),
    Claim(
        "head-switch-above",
        "Above the method's switch (SimSiam 60 %, BYOL 40 %, Barlow 20 %), fine-tuning only "
        "the last FC beats the full head",
        "ge",
        Side("two-stage", tuple(HEAD_SWITCH), _LASL, "last"),
        Side("two-stage", tuple(HEAD_SWITCH), _LASL, "full"),
        same=("method",),
        head_switch="above",
        noise_text="noise above the switch",
        paper="nu = 60 / 40 / 20 % for SimSiam / BYOL / Barlow Twins",
        source="Sec. 3.2",
    ),
    Claim(
        "head-switch-below",
        "At or below the switch, the full head beats the last FC alone",
        "ge",
        Side("two-stage", tuple(HEAD_SWITCH), _LASL, "full"),
        Side("two-stage", tuple(HEAD_SWITCH), _LASL, "last"),
        same=("method",),
        head_switch="at_or_below",
        noise_text="noise at or below the switch",
        paper="nu = 60 / 40 / 20 % for SimSiam / BYOL / Barlow Twins",
        source="Sec. 3.2",
    ),
    Claim(
        "every-ssl-method-60-at-60",
        "Every SSL method reaches at least 60 % on CIFAR-10, gamma 100, 60 % noise",
        "at_least",
        _TWO,
        noise=(0.6, 0.6),
        noise_text="60 % noise",
        gamma="largest",
        datasets=("cifar10",),
        bound=60.0,
        paper=">= 60 %",
        source="Sec. 3.4, Fig. 5",
    ),
    Claim(
        "two-stage-beats-dividemix",
        "Two-stage beats DivideMix at every noise level at the strongest imbalance",
        "ge",
        _TWO,
        Side("single-stage", "dividemix"),
        gamma="largest",
        paper="10 to 30 points above on CIFAR-10 gamma 100; SimSiam +12.1 (CIFAR-10) and "
        "+21.5 (CIFAR-100) at 90 % noise",
        source="Fig. 5, Sec. 3.4",
    ),
    Claim(
        "two-stage-beats-elr",
        "Two-stage beats ELR+ at every noise level at the strongest imbalance",
        "ge",
        _TWO,
        Side("single-stage", "elr+"),
        gamma="largest",
        paper="10 to 30 points above on CIFAR-10 gamma 100",
        source="Fig. 5, Sec. 3.4",
    ),
    Claim(
        "clothing1m-simsiam-beats-baselines",
        "On long-tailed Clothing1M, SimSiam + LA+SL beats DivideMix and ELR+",
        "ge",
        Side("two-stage", "simsiam", _LASL),
        Side("single-stage", ("dividemix", "elr+")),
        datasets=("clothing1m",),
        paper="gamma 50 / 100: 69.3 / 68.2 vs DivideMix 67.1 / 64.9 and ELR 63.9 / 59.6",
        source="Table 1, Sec. 3.5",
    ),
)


@dataclass
class Verdict:
    """A claim's verdict on one run: what was found, and the cells it was found on."""

    claim: Claim
    verdict: str  # HOLDS | FAILS | UNMEASURED
    ours: str  # the numbers, in words
    seeds: str  # the seeds behind them
    spread: str  # with 2+ seeds, how many cells differ beyond the seed spread
    missing: str = ""  # the cells the claim needs and the run lacks
    cells: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per compared cell


# ---------------------------------------------------------------------------- selecting rows


def _rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows claims are computed on: finished, measured noise, longest pre-training."""
    rows = final_encoders(ok_rows(df)).copy()
    single = rows["stage"] == "single-stage"
    rows["pair_loss"] = rows["loss"].where(~single, rows["method"].map(SINGLE_STAGE_LOSS))
    rows["chance"] = [1.0 / NUM_CLASSES.get(str(d), np.nan) for d in rows["dataset"]]
    rows["noise"] = rows["noise"].astype(float).round(6)
    return rows


def _side_rows(rows: pd.DataFrame, side: Side) -> pd.DataFrame:
    sel = rows[rows["stage"] == side.stage]
    if side.method == EACH:
        pass
    elif isinstance(side.method, tuple):
        sel = sel[sel["method"].isin(side.method)]
    else:
        sel = sel[sel["method"] == side.method]
    if side.stage == "two-stage" and side.loss not in (None, EACH):
        sel = sel[sel["loss"] == side.loss]
    if side.head is not None:
        sel = sel[sel["head"] == side.head]
    return sel


def _cell_rows(rows: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    """`rows` restricted to the claim's data sets, gammas and noise levels."""
    sel = rows
    if claim.datasets:
        sel = sel[sel["dataset"].isin(claim.datasets)]
    if claim.gamma == "imbalanced":
        sel = sel[sel["gamma"].astype(float) > 1]
    elif claim.gamma == "largest":
        top = sel.groupby("dataset")["gamma"].transform("max")
        sel = sel[(sel["gamma"] == top) & (sel["gamma"].astype(float) > 1)]
    lo, hi = claim.noise
    sel = sel[(sel["noise"] >= lo - 1e-9) & (sel["noise"] <= hi + 1e-9)]
    if claim.head_switch:
        nu = sel["method"].map(HEAD_SWITCH)
        above = sel["noise"] > nu + 1e-9
        sel = sel[nu.notna() & (above if claim.head_switch == "above" else ~above)]
    return sel


def _where(claim: Claim) -> str:
    parts = []
    if claim.datasets:
        parts.append(", ".join(dataset_label(d) for d in claim.datasets))
    parts.append(
        {"imbalanced": "gamma > 1", "largest": "the largest gamma", "any": "any gamma"}[claim.gamma]
    )
    parts.append(claim.noise_text)
    return "; ".join(parts)


# ---------------------------------------------------------------------------- comparing


def _keys(side: Side, claim: Claim) -> list[str]:
    """The columns that name one cell of `side`: where, plus the fields it ranges over."""
    keys = ["dataset", "gamma", "noise"]
    if side.method == EACH or isinstance(side.method, tuple):
        keys.append("method")
    if side.stage == "two-stage" and side.loss == EACH:
        keys.append("loss")
    return keys + [c for c in claim.same if c not in keys]


def _per_seed(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean accuracy (%) per cell and (seed, data seed)."""
    out = rows.groupby([*keys, "seed", "data_seed"], dropna=False)["acc"].mean() * 100
    return out.rename("acc").reset_index()


def _pairs(a_rows: pd.DataFrame, b_rows: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    """Per-seed accuracies of A and B side by side, one row per (A cell, B cell, seed)."""
    ka, kb = _keys(claim.a, claim), _keys(claim.b, claim)  # type: ignore[arg-type]
    a = _per_seed(a_rows, ka)
    b = _per_seed(b_rows, kb)
    on = ["dataset", "gamma", "noise", *claim.same]
    a = a.rename(columns={c: f"a_{c}" for c in ka if c not in on} | {"acc": "a"})
    b = b.rename(columns={c: f"b_{c}" for c in kb if c not in on} | {"acc": "b"})
    return a.merge(b, on=[*on, "seed", "data_seed"], how="inner")


def _cell_cols(pairs: pd.DataFrame) -> list[str]:
    return [c for c in pairs.columns if c not in ("a", "b", "seed", "data_seed", "d", "r")]


def _summarise(pairs: pd.DataFrame, value: str, cols: list[str]) -> pd.DataFrame:
    """Per cell: means of a and b, the mean of `value`, its seed spread and the seed count."""
    g = pairs.groupby(cols, dropna=False, sort=True)
    out = g.agg(
        a=("a", "mean"),
        b=("b", "mean"),
        value=(value, "mean"),
        spread=(value, lambda s: float(s.std(ddof=1)) if len(s) > 1 else np.nan),
        n=(value, "size"),
    )
    return out.reset_index()


def _beyond(cells: pd.DataFrame) -> pd.Series:
    """True / False where a cell has 2+ seeds; NaN where its spread is unknown."""
    ok = cells["n"] >= 2
    return (cells["value"].abs() > cells["spread"]).where(ok)


# ---------------------------------------------------------------------------- one claim


def _cell_name(row: pd.Series, cols: Sequence[str]) -> str:
    parts = [dataset_label(row["dataset"])] if "dataset" in cols else []
    if "gamma" in cols:
        parts.append(f"gamma {fmt_num(row['gamma'])}")
    for c in cols:
        if c in ("dataset", "gamma", "noise") or pd.isna(row[c]):
            continue
        if label(row[c]) not in parts:  # a paired loss is named once
            parts.append(label(row[c]))
    if "noise" in cols:
        parts.append(f"{fmt_num(round(100 * float(row['noise']), 1))} %")
    return " ".join(parts)


def _seed_text(rows: pd.DataFrame) -> str:
    seeds = sorted({int(s) for s in rows["seed"]})
    dseeds = sorted({int(s) for s in rows["data_seed"]})
    n = len(rows.groupby(["seed", "data_seed"]))
    return (
        f"{n} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}; "
        f"data seed{'s' if len(dseeds) > 1 else ''} {', '.join(map(str, dseeds))})"
    )


def _spread_text(cells: pd.DataFrame) -> str:
    beyond = cells["beyond"].dropna()
    if beyond.empty:
        return "unknown (one seed per cell)"
    return f"{int(beyond.sum())} of {len(beyond)} cells beyond the seed spread"


def _unmeasured(claim: Claim, a_rows: pd.DataFrame, b_rows: pd.DataFrame | None) -> Verdict:
    where = _where(claim)
    lacking = []
    if a_rows.empty:
        lacking.append(f"{claim.a.text()} ({where})")
    if b_rows is not None and b_rows.empty:
        lacking.append(f"{claim.b.text()} ({where})")  # type: ignore[union-attr]
    if not lacking:  # both sides have rows, but never in the same cell
        lacking.append(
            f"{claim.a.text()} and {claim.b.text()} in the same cell ({where})"  # type: ignore[union-attr]
        )
    return Verdict(claim, UNMEASURED, "", "", "", missing="no rows of " + "; ".join(lacking))


def _missing_b(a_rows: pd.DataFrame, pairs: pd.DataFrame, claim: Claim) -> str:
    """A cells of the claim that have no B cell to compare with."""
    ka = _keys(claim.a, claim)
    have = {tuple(r) for r in pairs[[c if c in pairs else f"a_{c}" for c in ka]].to_numpy()}
    lone = a_rows[ka].drop_duplicates()
    lone = lone[[tuple(r) not in have for r in lone.to_numpy()]]
    if lone.empty:
        return ""
    names = [_cell_name(r, ka) for _, r in lone.iterrows()]
    more = f" and {len(names) - 4} more" if len(names) > 4 else ""
    return f"no {claim.b.text()} for {', '.join(names[:4])}{more}"  # type: ignore[union-attr]


def _list(cells: pd.DataFrame, fmt, cols: list[str], limit: int = 6) -> str:
    if len(cells) <= limit:
        return "; ".join(f"{_cell_name(r, cols)}: {fmt(r)}" for _, r in cells.iterrows())
    worst = cells.loc[cells["value"].idxmin()]
    best = cells.loc[cells["value"].idxmax()]
    return (
        f"{len(cells)} cells; lowest {_cell_name(worst, cols)}: {fmt(worst)}; "
        f"highest {_cell_name(best, cols)}: {fmt(best)}"
    )


def _verdict_ge(claim: Claim, a_rows: pd.DataFrame, b_rows: pd.DataFrame) -> Verdict:
    pairs = _pairs(a_rows, b_rows, claim)
    if pairs.empty:
        return _unmeasured(claim, a_rows, b_rows)
    pairs["d"] = pairs["a"] - pairs["b"]
    cols = _cell_cols(pairs)
    cells = _summarise(pairs, "d", cols)
    cells["holds"] = cells["value"] >= 0
    cells["beyond"] = _beyond(cells)
    n_ok = int(cells["holds"].sum())
    verdict = HOLDS if n_ok == len(cells) else FAILS
    ours = f"A >= B in {n_ok} of {len(cells)} cells: " + _list(
        cells, lambda r: f"{r['a']:.1f} vs {r['b']:.1f} ({r['value']:+.1f})", cols
    )
    return Verdict(
        claim,
        verdict,
        ours,
        _seed_text(pairs),
        _spread_text(cells),
        missing=_missing_b(a_rows, pairs, claim),
        cells=cells,
    )


def _verdict_best(claim: Claim, a_rows: pd.DataFrame, b_rows: pd.DataFrame) -> Verdict:
    others = b_rows[b_rows["loss"] != claim.a.loss]
    pairs = _pairs(a_rows, others, claim)
    if pairs.empty:
        return _unmeasured(claim, a_rows, others)
    cols = [c for c in _cell_cols(pairs) if c != "b_loss"]
    # per seed, A against the best alternative of that seed's cell
    best = pairs.groupby([*cols, "seed", "data_seed"], dropna=False).agg(
        a=("a", "first"), b=("b", "max")
    )
    best = best.reset_index()
    best["d"] = best["a"] - best["b"]
    cells = _summarise(best, "d", cols)
    by_loss = pairs.groupby([*cols, "b_loss"], dropna=False)["b"].mean().reset_index()
    top = by_loss.loc[by_loss.groupby(cols, dropna=False)["b"].idxmax()]
    cells = cells.merge(top[[*cols, "b_loss"]].rename(columns={"b_loss": "runner_up"}), on=cols)
    cells["holds"] = cells["value"] >= 0
    cells["beyond"] = _beyond(cells)
    n_ok = int(cells["holds"].sum())
    need = claim.share * len(cells)
    verdict = HOLDS if n_ok >= need - 1e-9 else FAILS
    ours = f"best in {n_ok} of {len(cells)} cells (needs {claim.share:.0%}): " + _list(
        cells,
        lambda r: f"{r['a']:.1f} vs {label(r['runner_up'])} {r['b']:.1f} ({r['value']:+.1f})",
        cols,
    )
    return Verdict(claim, verdict, ours, _seed_text(pairs), _spread_text(cells), cells=cells)


def _verdict_grows(claim: Claim, a_rows: pd.DataFrame, b_rows: pd.DataFrame) -> Verdict:
    pairs = _pairs(a_rows, b_rows, claim)
    if pairs.empty:
        return _unmeasured(claim, a_rows, b_rows)
    chance = pairs["dataset"].map(lambda d: 100.0 / NUM_CLASSES.get(str(d), np.nan))
    pairs["r"] = (pairs["a"] - chance) / (pairs["b"] - chance)
    cols = _cell_cols(pairs)
    series_cols = [c for c in cols if c != "noise"]
    rows, ratios = [], []
    for key, s in pairs.groupby(series_cols, dropna=False, sort=True):
        levels = sorted(s["noise"].unique())
        per_noise = s.groupby("noise")["r"].mean()
        ratios.append((dict(zip(series_cols, key, strict=True)), per_noise))
        if len(levels) < 2:
            continue
        lo, hi = levels[0], levels[-1]
        first = s[s["noise"] == lo].set_index(["seed", "data_seed"])["r"]
        last = s[s["noise"] == hi].set_index(["seed", "data_seed"])["r"]
        change = (last - first).dropna()
        slope = float(np.polyfit(per_noise.index.astype(float), per_noise.to_numpy(), 1)[0])
        rows.append(
            dict(zip(series_cols, key, strict=True))
            | {
                "a": float(per_noise.loc[lo]),
                "b": float(per_noise.loc[hi]),
                "value": float(change.mean()),
                "spread": float(change.std(ddof=1)) if len(change) > 1 else np.nan,
                "n": len(change),
                "slope": slope,
                "from": lo,
                "to": hi,
            }
        )
    if not rows:
        return Verdict(
            claim,
            UNMEASURED,
            "",
            "",
            "",
            missing=f"fewer than two noise levels of {claim.a.text()} and "
            f"{claim.b.text()} in one cell ({_where(claim)})",  # type: ignore[union-attr]
        )
    cells = pd.DataFrame(rows)
    cells["holds"] = (cells["value"] > 0) & (cells["slope"] > 0)
    cells["beyond"] = _beyond(cells)
    n_ok = int(cells["holds"].sum())
    verdict = HOLDS if n_ok == len(cells) else FAILS

    def series(key: dict, per_noise: pd.Series) -> str:
        name = _cell_name(pd.Series(key), series_cols) or "all"
        values = " / ".join(f"{v:.2f}" for v in per_noise.to_numpy())
        noises = "/".join(fmt_num(round(100 * float(x), 1)) for x in per_noise.index)
        return f"{name}: {values} at {noises} %"

    shown = [series(k, v) for k, v in ratios[:6]]
    more = f"; and {len(ratios) - 6} more series" if len(ratios) > 6 else ""
    ours = f"grows in {n_ok} of {len(cells)} series; A/B above chance: " + "; ".join(shown) + more
    return Verdict(claim, verdict, ours, _seed_text(pairs), _spread_text(cells), cells=cells)


def _verdict_at_least(claim: Claim, a_rows: pd.DataFrame) -> Verdict:
    if a_rows.empty:
        return _unmeasured(claim, a_rows, None)
    ka = _keys(claim.a, claim)
    per = _per_seed(a_rows, ka).rename(columns={"acc": "a"})
    per["b"] = claim.bound
    per["d"] = per["a"] - per["b"]
    cells = _summarise(per, "d", ka)
    cells["holds"] = cells["a"] >= claim.bound
    cells["beyond"] = _beyond(cells)
    n_ok = int(cells["holds"].sum())
    verdict = HOLDS if n_ok == len(cells) else FAILS
    ours = f">= {claim.bound:.0f} % in {n_ok} of {len(cells)} cells: " + _list(
        cells, lambda r: f"{r['a']:.1f} ({r['value']:+.1f})", ka
    )
    return Verdict(claim, verdict, ours, _seed_text(per), _spread_text(cells), cells=cells)


def verdict(claim: Claim, rows: pd.DataFrame) -> Verdict:
    """One claim's verdict on `rows` (already through `_rows`)."""
    here = _cell_rows(rows, claim)
    a_rows = _side_rows(here, claim.a)
    if claim.kind == "at_least":
        return _verdict_at_least(claim, a_rows)
    assert claim.b is not None, claim.id
    b_rows = _side_rows(here, claim.b)
    if a_rows.empty or b_rows.empty:
        return _unmeasured(claim, a_rows, b_rows)
    if claim.kind == "ge":
        return _verdict_ge(claim, a_rows, b_rows)
    if claim.kind == "best":
        return _verdict_best(claim, a_rows, b_rows)
    return _verdict_grows(claim, a_rows, b_rows)


def verdicts(df: pd.DataFrame, claims: Sequence[Claim] = CLAIMS) -> list[Verdict]:
    """Every claim's verdict on a results table (`ltsweep.load_results`)."""
    if df.empty:
        rows = df
    else:
        rows = _rows(df)
    out = []
    for claim in claims:
        if rows.empty:
            out.append(_unmeasured(claim, rows, rows if claim.b is not None else None))
        else:
            out.append(verdict(claim, rows))
    return out


def _compared(claim: Claim) -> str:
    sides = f"A: {claim.a.text()}"
    if claim.b is not None:
        sides += f"; B: {claim.b.text()}" + (" (the other losses)" if claim.kind == "best" else "")
    elif claim.bound is not None:
        sides += f"; bound {claim.bound:.0f} %"
    return f"{sides}; {_where(claim)}"


def claims_table(found: Sequence[Verdict]) -> pd.DataFrame:
    """The claims section's table: one row per claim, in display form."""
    return pd.DataFrame(
        {
            "claim": [f"{v.claim.says} (`{v.claim.id}`)" for v in found],
            "verdict": [v.verdict for v in found],
            "compared": [_compared(v.claim) for v in found],
            "measure": [v.claim.measure for v in found],
            "ours": [v.ours or v.missing for v in found],
            "seeds": [v.seeds for v in found],
            "beyond seed spread": [v.spread for v in found],
            "paper": [v.claim.paper for v in found],
            "source": [v.claim.source for v in found],
        }
    )
