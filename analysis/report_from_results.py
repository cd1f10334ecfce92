"""Rebuild a committed report (`analysis/results/<name>/index.md`) from its `results.parquet`.

The run folder a committed report was drawn from does not travel with the repository; its
results table does. This puts that table's rows in a fresh run folder, runs `ltsweep report`
on it (figures, claims, pivot, comparison with the paper) and writes the page and the
figures it drew into the report's folder, followed by the folder's `notes.md` (how the run
was made, its wall clock, a few lines of interpretation) when there is one.

Figures that need more than the rows (the pre-training curves, the t-SNE of cached features)
cannot be redrawn from the table; where the folder already holds them they are kept, and its
`notes.md` shows them.

    python analysis/report_from_results.py analysis/results/cifar10-cpu --sweep sweeps/cifar10-cpu.yaml
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from ltsweep.report import write_report
from ltsweep.store.results import COLUMNS, write_rows


def rows_of(table: pd.DataFrame) -> list[dict]:
    """The parquet's rows as the results store writes them (missing values as it stores them)."""
    out = []
    for rec in table[[c for c in table.columns if c in COLUMNS]].to_dict("records"):
        for key in ("head", "error", "pretrain_key"):
            if rec.get(key) is None or (isinstance(rec.get(key), float) and math.isnan(rec[key])):
                rec[key] = ""
        started = rec.get("started")
        rec["started"] = "" if pd.isna(started) else pd.Timestamp(started).isoformat()
        rec["class_acc"] = [float(x) for x in rec.get("class_acc", [])]
        out.append(rec)
    return out


def rebuild(folder: Path, sweep_file: Path | None) -> Path:
    table = pd.read_parquet(folder / "results.parquet")
    name = str(table["sweep"].iloc[0])
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "runs" / name
        write_rows(run / "results", "rows", rows_of(table))
        if sweep_file is not None:  # lets the report look for pre-training curves
            shutil.copyfile(sweep_file, run / "sweep.yaml")
        out = Path(tmp) / "report"
        write_report(
            run,
            out,
            source=f"`{folder.as_posix()}/results.parquet` (the rows of `ltsweep run` of `{name}`)",
        )
        # the temporary folder is no reader's concern: name the run as the command does
        page = (out / "index.md").read_text().replace(str(run), f"runs/{name}")
        page = page.replace(f"{tmp}/", "")
        for figure in out.glob("fig*.png"):
            shutil.copyfile(figure, folder / figure.name)
    notes = folder / "notes.md"
    if notes.is_file():
        page = page.rstrip("\n") + "\n\n" + notes.read_text().strip("\n") + "\n"
    index = folder / "index.md"
    index.write_text(page)
    return index


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="a report folder holding results.parquet")
    ap.add_argument("--sweep", type=Path, help="the sweep file the rows were run from")
    args = ap.parse_args(argv)
    print(f"wrote {rebuild(args.folder, args.sweep)}")


if __name__ == "__main__":
    main()
