"""`ltsweep results`: a metric's mean +/- std (n) per cell, filters, formats; the table's types."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ltsweep.store.results import NotARunFolder, load_results, write_rows
from ltsweep.store.results_view import ViewError, results_text
from tests.helpers import ltsweep_cmd


def _row(
    key: str, stage: str, method: str, gamma: float, loss: str, noise: float, seed: int, acc: float
) -> dict:
    return {
        "sweep": "t", "unit_key": key, "pretrain_key": "p" if stage == "two-stage" else None,
        "stage": stage, "method": method, "dataset": "digits", "gamma": gamma, "noise": noise,
        "noise_type": "symmetric", "loss": loss, "head": "full" if stage == "two-stage" else "",
        "seed": seed, "data_seed": 0, "epochs": 1, "acc": acc, "acc_many": acc, "acc_medium": np.nan,
        "acc_few": acc / 2, "actual_noise": noise, "n_train": 10, "seconds": 1.0,
        "started": "2026-11-30T12:00:00+00:00", "host": "h", "version": "0",
    }  # fmt: skip


@pytest.fixture
def run(tmp_path: Path) -> Path:
    rows = []
    for seed, accs in enumerate([(0.60, 0.40), (0.64, 0.44), (0.68, 0.30)]):
        for noise, acc in zip((0.0, 0.4), accs, strict=True):
            rows.append(
                _row(f"s{seed}{noise}", "two-stage", "simsiam", 10.0, "la+sl", noise, seed, acc)
            )
    rows.append(_row("b", "single-stage", "ce", 10.0, "ce", 0.0, 0, 0.5))
    write_rows(tmp_path / "results", "x", rows)
    return tmp_path


def _csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_cells_are_mean_std_and_count(run: Path) -> None:
    table = _csv(results_text(run, fmt="csv"))
    assert table[0] == ["stage", "method", "gamma", "loss", "0%", "40%"]
    two = next(r for r in table if r[0] == "two-stage")
    for cell, values in zip(two[4:], ([60, 64, 68], [40, 44, 30]), strict=True):
        mean, std = np.mean(values), np.std(values, ddof=1)
        assert cell == f"{mean:.1f} +/- {std:.1f} (3)"
    single = next(r for r in table if r[0] == "single-stage")
    assert single[4:] == ["50.0 (1)", ""]


def test_where_metric_and_formats(run: Path) -> None:
    only = _csv(results_text(run, "acc_few", ["stage=two-stage", "gamma=10"], "csv"))
    assert (
        len(only) == 2
        and only[1][4] == f"{np.mean([30, 32, 34]):.1f} +/- {np.std([30, 32, 34], ddof=1):.1f} (3)"
    )
    md = results_text(run, fmt="markdown").splitlines()
    assert md[0].startswith("| stage |") and md[1].startswith("| --- |") and len(md) == 4
    tex = results_text(run, fmt="latex")
    assert r"0\%" in tex and r"$\pm$" in tex and tex.endswith(r"\end{tabular}")
    assert "no acc values for method=byol" in results_text(run, where=["method=byol"])
    with pytest.raises(ViewError, match="--where nope=1: no column 'nope'"):
        results_text(run, where=["nope=1"])
    with pytest.raises(ViewError, match="--where gamma=ten: gamma is a number"):
        results_text(run, where=["gamma=ten"])
    with pytest.raises(ViewError, match="--where 'method': write it as COLUMN=VALUE"):
        results_text(run, where=["method"])


def test_the_command(run: Path) -> None:
    out = ltsweep_cmd("results", str(run), "--where", "loss=la+sl", "--format", "markdown", cwd=run)
    assert out.returncode == 0 and "| two-stage | simsiam | 10 | la+sl |" in out.stdout
    bad = ltsweep_cmd("results", str(run), "--where", "x=1", cwd=run)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no column 'x'" in bad.stderr


def test_load_results_types_and_missing_values(run: Path, tmp_path_factory) -> None:
    df = load_results(run)
    assert isinstance(df["started"].dtype, pd.DatetimeTZDtype) and str(df["started"].dt.tz) == "UTC"
    assert df["started"].iloc[0] == pd.Timestamp("2026-11-30T12:00:00Z")
    single = df[df["stage"] == "single-stage"].iloc[0]
    assert pd.isna(single["head"]) and pd.isna(single["pretrain_key"]) and pd.isna(single["error"])
    assert pd.isna(single["knn_acc"])  # the same missing value as a number's
    assert df.loc[df["stage"] == "two-stage", "head"].eq("full").all()
    empty = tmp_path_factory.mktemp("not-a-run")
    with pytest.raises(NotARunFolder, match=f"{empty}: not a run folder"):
        load_results(empty)


def test_real_noisy_labels_sit_at_their_measured_noise(tmp_path: Path) -> None:
    """A CIFAR-N run's grid noise 0 is a placeholder: the column is its labels' measured rate."""
    rows = [_row("n", "two-stage", "barlow", 100.0, "la+sl", 0.0, 0, 0.382)]
    rows[0] |= {"noise_type": "cifar-n", "actual_noise": 0.38874}
    write_rows(tmp_path / "results", "x", rows)
    header = results_text(tmp_path).splitlines()[1].split()
    assert header[-1] == "38.9%" and "0%" not in header
