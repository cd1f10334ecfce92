"""The paper's published numbers as data, and their comparison with a run.

Source: the protocol's "Headline numbers" (Karthik, Revaud, Chidlovskii 2021,
Sections 3.4-3.5 and Table 1), plus the solo-learn linear-probe references the protocol
lists. Keeping them as rows rather than prose lets the report say, cell by cell, how far a
reproduction lands from the paper, and lets a test check one difference.

A number is a point value, a range (the paper gives "90.1 % to 92.0 %" for four methods
without saying which is which) or a lower bound ("at least 60 %"); some are gains (two-stage
minus single-stage, SimSiam minus DivideMix). When the paper does not state gamma ("in the
imbalanced case") the number is matched to each gamma > 1 of the run, and the note says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ltsweep.report.figures import SSL_ORDER, final_encoders, fmt_num, label
from ltsweep.report.figures.base import ok_rows

__all__ = ["PaperNumber", "PAPER_NUMBERS", "paper_numbers", "compare_with_paper"]


@dataclass(frozen=True)
class PaperNumber:
    """One published accuracy (in %), keyed like a results-table cell."""

    dataset: str
    gamma: float | None  # None: the paper only says "imbalanced" (matched to any gamma > 1)
    noise: float  # fraction, as in the results table
    stage: str  # two-stage | single-stage
    method: str  # SSL method or baseline name
    loss: str | None  # two-stage fine-tuning loss; None for single-stage (the method says it)
    low: float  # the value, or the lower end of a range, or the bound
    high: float | None  # == low for a point value, > low for a range, None for "at least low"
    source: str
    #: a gain: ours = mean(this cell) - mean(the cell (stage, method, loss) of the same key)
    minus: tuple[str, str, str | None] | None = None
    head: str | None = None  # required head (the linear-probe references)
    note: str = ""

    @property
    def kind(self) -> str:
        if self.minus is not None:
            return "gain"
        if self.high is None:
            return "at least"
        return "range" if self.high > self.low else "value"

    @property
    def text(self) -> str:
        if self.high is None:
            return f">= {self.low:.1f}"
        if self.high > self.low:
            return f"{self.low:.1f}-{self.high:.1f}"
        return f"{'+' if self.minus and self.low > 0 else ''}{self.low:.1f}"


#: Sec. 3.4: "90.1 % to 92.0 % for CIFAR-10 when gamma = 1 and noise = 20 %", the range of the
#: four SSL methods (fine-tuned with LA+SL), not each one's number
_SSL_RANGE = (90.1, 92.0)
#: Sec. 3.4: the fully supervised baselines in the same setting
_BALANCED_BASELINES = {"dividemix": 95.7, "elr+": 95.8}  # 95.8 is ELR+'s (plain ELR: 91.2)
#: Sec. 3.4: SimSiam (LA+SL) at 90 % noise, "in the imbalanced case", and its gain over DivideMix
_AT_90 = {"cifar10": (88.1, 12.1), "cifar100": (53.0, 21.5)}
#: Sec. 3.4 / Fig. 4: two-stage BYOL over single stage, CIFAR-100, gamma 10, 60 % noise
_BYOL_GAIN = 24.0
#: Sec. 3.4: every SSL method at least this on CIFAR-10, gamma 100, 60 % noise
_AT_LEAST_60 = 60.0
#: Table 1 (Clothing1M, real noise): (stage, method, loss) -> accuracy at gamma 1 / 50 / 100.
#: ELR+ with two networks and weight averaging (Sec. 3.5: "ensembling"); ELR+'s own
#: Clothing1M figure is 74.8, plain ELR's 72.9 (the ELR paper)
_TABLE1_GAMMAS = (1.0, 50.0, 100.0)
_TABLE1 = {
    ("single-stage", "dividemix", None): (73.9, 67.1, 64.9),
    ("single-stage", "elr+", None): (74.2, 63.9, 59.6),
    ("two-stage", "simsiam", "la+sl"): (71.1, 69.3, 68.2),
}
#: not from the paper: solo-learn's linear probes (balanced clean CIFAR, ResNet18, 1000 epochs)
_LINEAR = {
    "cifar10": {"simclr": 90.7, "byol": 92.6, "simsiam": 90.5, "barlow": 92.1},
    "cifar100": {"simclr": 65.8, "byol": 70.5, "simsiam": 66.0, "barlow": 70.9},
}


def _at_90(ds: str, simsiam: float, gain: float) -> tuple[PaperNumber, ...]:
    """SimSiam's number, DivideMix's derived from it, and the gain itself."""
    src = f"Sec. 3.4: SimSiam {simsiam}% at 90% noise, imbalanced, +{gain} over DivideMix"
    dividemix = round(simsiam - gain, 1)
    return (
        PaperNumber(ds, None, 0.9, "two-stage", "simsiam", "la+sl", simsiam, simsiam, src),
        PaperNumber(
            ds, None, 0.9, "single-stage", "dividemix", None, dividemix, dividemix, src,
            note=f"derived: {simsiam} - {gain}",
        ),
        PaperNumber(
            ds, None, 0.9, "two-stage", "simsiam", "la+sl", gain, gain, src,
            minus=("single-stage", "dividemix", None),
            note="gain of SimSiam (LA+SL) over DivideMix",
        ),
    )  # fmt: skip


PAPER_NUMBERS: tuple[PaperNumber, ...] = (
    *(
        PaperNumber(
            "cifar10", 1.0, 0.2, "two-stage", m, "la+sl", *_SSL_RANGE,
            "Sec. 3.4: SSL methods reach 90.1-92.0% on CIFAR-10, gamma=1, 20% noise",
            note="the paper gives the range of the four SSL methods, not each one",
        )
        for m in SSL_ORDER
    ),
    PaperNumber(
        "cifar10", 1.0, 0.2, "single-stage", "dividemix", None,
        _BALANCED_BASELINES["dividemix"], _BALANCED_BASELINES["dividemix"],
        "Sec. 3.4: DivideMix 95.7% on CIFAR-10, gamma=1, 20% noise",
    ),
    PaperNumber(
        "cifar10", 1.0, 0.2, "single-stage", "elr+", None,
        _BALANCED_BASELINES["elr+"], _BALANCED_BASELINES["elr+"],
        "Sec. 3.4: ELR 95.8% on CIFAR-10, gamma=1, 20% noise (ELR+'s figure)",
    ),
    *(row for ds, (simsiam, gain) in _AT_90.items() for row in _at_90(ds, simsiam, gain)),
    PaperNumber(
        "cifar100", 10.0, 0.6, "two-stage", "byol", "la+sl", _BYOL_GAIN, _BYOL_GAIN,
        "Sec. 3.4 / Fig. 4: two-stage BYOL beats single stage by +24% on CIFAR-100, gamma=10, "
        "60% noise",
        minus=("single-stage", "la+sl", None),
        note="gain over single-stage LA+SL (the paper does not name the single-stage loss)",
    ),
    *(
        PaperNumber(
            "cifar10", 100.0, 0.6, "two-stage", m, "la+sl", _AT_LEAST_60, None,
            "Sec. 3.4: every SSL method >= 60% on CIFAR-10, gamma=100, 60% noise",
        )
        for m in SSL_ORDER
    ),
    *(
        PaperNumber(
            "clothing1m", g, 0.0, stage, m, loss, v, v, "Table 1 (Clothing1M)",
            note="real label noise, none added"
            + (
                "; the paper's DivideMix/ELR use ImageNet init and ensembling"
                if stage == "single-stage"
                else ""
            ),
        )
        for (stage, m, loss), values in _TABLE1.items()
        for g, v in zip(_TABLE1_GAMMAS, values, strict=True)
    ),
    *(
        PaperNumber(
            ds, 1.0, 0.0, "two-stage", m, "ce", v, v,
            "reference linear probe, balanced clean CIFAR, ResNet18, 1000 epochs (solo-learn)",
            head="linear",
            note="not from the paper: solo-learn reference",
        )
        for ds, values in _LINEAR.items()
        for m, v in values.items()
    ),
)  # fmt: skip


def paper_numbers() -> pd.DataFrame:
    """The published numbers as a DataFrame (one row per `PaperNumber`, plus kind and text)."""
    rows = []
    for p in PAPER_NUMBERS:
        d = asdict(p)
        d["minus"] = "" if p.minus is None else " ".join(str(x) for x in p.minus if x)
        d["kind"], d["text"] = p.kind, p.text
        rows.append(d)
    return pd.DataFrame(rows)


def _cell(
    rows: pd.DataFrame,
    gamma: float,
    noise: float,
    stage: str,
    method: str,
    loss: str | None,
    head: str | None,
) -> tuple[pd.DataFrame, str]:
    sel = rows[
        (rows["stage"] == stage)
        & (rows["method"] == method)
        & np.isclose(rows["gamma"].astype(float), gamma)
        & np.isclose(rows["noise"].astype(float), noise)
    ]
    if loss is not None and stage == "two-stage":
        sel = sel[sel["loss"] == loss]
    note = ""
    if head is not None and not sel.empty:
        exact = sel[sel["head"] == head]
        if exact.empty:
            heads = ", ".join(sorted(set(sel["head"])))
            note = f"no {head} head in the run; compared with head {heads}"
        else:
            sel = exact
    return sel, note


def _diff(p: PaperNumber, ours: float) -> tuple[float, float, object]:
    """(paper value, ours - paper, claim holds) for a point, range or bound."""
    if p.high is None:
        return p.low, ours - p.low, bool(ours >= p.low)
    if p.high > p.low:
        mid = (p.low + p.high) / 2
        if ours < p.low:
            return mid, ours - p.low, False
        if ours > p.high:
            return mid, ours - p.high, False
        return mid, 0.0, True
    return p.low, ours - p.low, None


def compare_with_paper(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's numbers next to ours, for every cell both have.

    Columns: dataset, gamma, noise, stage, method, loss, kind (value | range | at least |
    gain: ours is then this cell minus the reference cell named in the note),
    paper (as published), paper_value (the value, the range's midpoint or the bound),
    ours (mean over seeds, %), diff (ours - value; for a range the distance to the nearest
    end, 0 inside; for a bound ours - bound), holds (range/bound satisfied; None for point
    values), n (our rows), note, source. Two-stage rows use the longest pre-training.
    """
    cols = [
        "dataset",
        "gamma",
        "noise",
        "stage",
        "method",
        "loss",
        "kind",
        "paper",
        "paper_value",
        "ours",
        "diff",
        "holds",
        "n",
        "note",
        "source",
    ]
    if df.empty:
        return pd.DataFrame(columns=cols)
    rows = final_encoders(ok_rows(df))
    out = []
    for p in PAPER_NUMBERS:
        here = rows[rows["dataset"] == p.dataset]
        if here.empty:
            continue
        if p.gamma is None:
            gammas = sorted(g for g in here["gamma"].unique() if g > 1)
            gamma_note = "paper: imbalanced, gamma not stated; matched to our gamma={}"
        else:
            gammas = [p.gamma]
            gamma_note = ""
        for g in gammas:
            sel, head_note = _cell(here, g, p.noise, p.stage, p.method, p.loss, p.head)
            if sel.empty:
                continue
            ours = float(sel["acc"].mean()) * 100
            notes = [p.note, head_note, gamma_note.format(fmt_num(g)) if gamma_note else ""]
            if p.minus is not None:
                other, _ = _cell(here, g, p.noise, *p.minus, None)
                if other.empty:
                    continue
                ours -= float(other["acc"].mean()) * 100
                notes.append(
                    f"ours = {label(p.method)} - {p.minus[0]} {label(p.minus[1])} (n={len(other)})"
                )
            value, diff, holds = _diff(p, ours)
            out.append(
                {
                    "dataset": p.dataset,
                    "gamma": float(g),
                    "noise": p.noise,
                    "stage": p.stage,
                    "method": p.method,
                    "loss": p.loss or "",
                    "kind": p.kind,
                    "paper": p.text,
                    "paper_value": value,
                    "ours": ours,
                    "diff": diff,
                    "holds": holds,
                    "n": len(sel),
                    "note": "; ".join(n for n in notes if n),
                    "source": p.source,
                }
            )
    return pd.DataFrame(out, columns=cols)
