"""The results table as text: accuracy (%) by (stage, method, gamma, loss) x noise."""

from __future__ import annotations

from pathlib import Path


def pivot(df):
    """Mean accuracy in % (and the number of seeds behind each cell when it is not 1)."""
    import pandas as pd

    if df.empty:
        return pd.DataFrame()
    table = df.assign(acc=df["acc"] * 100).pivot_table(
        index=["stage", "method", "gamma", "loss"], columns="noise", values="acc", aggfunc="mean"
    )
    table.columns = [f"{c:.0%}" for c in table.columns]
    return table.round(1)


def pivot_text(run_dir: str | Path) -> str:
    from ltsweep.store.results import load_results

    df = load_results(run_dir)
    if df.empty:
        return f"no results stored in {run_dir} yet"
    seeds = df.groupby(["stage", "method", "gamma", "loss", "noise"]).size()
    note = "" if seeds.max() == 1 else f" (mean over up to {seeds.max()} seeds)"
    return (
        f"accuracy (%) on the balanced clean test set{note}; columns: noise\n"
        + pivot(df).to_string()
    )
