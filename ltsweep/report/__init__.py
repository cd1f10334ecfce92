"""The analysis layer: the paper's figures and tables from a run's results table.

- `ltsweep.report.figures`: one function per figure (Figs. 3-8, Table 1), each returning a
  matplotlib Figure (or a DataFrame) that carries its plotted numbers as `ltsweep_data`.
- `ltsweep.report.paper`: the paper's published numbers and `compare_with_paper`.
- `ltsweep.report.claims`: the paper's claims as data (`CLAIMS`) and `verdicts(df)`, each
  claim's verdict on a run's rows (holds / does not hold / not measured).
- `ltsweep.report.build`: `write_report(run_dir or [run_dirs], formats=, dpi=)`, the
  `ltsweep report` command's work (`load_runs` combines the tables of several runs), with
  `tables` (the display tables) and `document` (one page written as Markdown and HTML).
- One colour and style per loss and method in every figure (`figures.base.style`).

May import: pandas, numpy, matplotlib (Agg), scikit-learn, `ltsweep.store`,
`ltsweep.planning` (the pre-training curves); no torch (the t-SNE's feature files are read
through `ltsweep.store.cache` when the report is written).
"""

from __future__ import annotations

from ltsweep.report.build import write_report
from ltsweep.report.claims import CLAIMS, verdicts
from ltsweep.report.figures import (
    FIGURE_NAMES,
    fig3_loss_gain,
    fig4_two_vs_single_stage,
    fig5_methods_vs_noise,
    fig6_pretrain_epochs,
    fig78_tsne,
    table1_clothing1m,
)
from ltsweep.report.paper import PAPER_NUMBERS, compare_with_paper, paper_numbers

__all__ = [
    "CLAIMS",
    "FIGURE_NAMES",
    "PAPER_NUMBERS",
    "compare_with_paper",
    "fig3_loss_gain",
    "fig4_two_vs_single_stage",
    "fig5_methods_vs_noise",
    "fig6_pretrain_epochs",
    "fig78_tsne",
    "paper_numbers",
    "table1_clothing1m",
    "verdicts",
    "write_report",
]
