"""Re-export of `ltsweep.report.figures` (and the paper comparison) for scripts run from the
repository root: `from analysis.figures import fig5_methods_vs_noise`.

The package is the single place the figures live; this module only saves notebooks and
scripts in `analysis/` from spelling the longer path. Notebooks run inside `analysis/` (where
`analysis` is not importable) should import `ltsweep.report.figures` directly.
"""

from __future__ import annotations

from ltsweep.report.figures import (
    fig3_loss_gain,
    fig4_two_vs_single_stage,
    fig5_methods_vs_noise,
    fig6_pretrain_epochs,
    fig78_tsne,
    final_encoders,
    summarize,
    table1_clothing1m,
    tsne_embed,
)
from ltsweep.report.paper import compare_with_paper, paper_numbers

__all__ = [
    "compare_with_paper",
    "fig3_loss_gain",
    "fig4_two_vs_single_stage",
    "fig5_methods_vs_noise",
    "fig6_pretrain_epochs",
    "fig78_tsne",
    "final_encoders",
    "paper_numbers",
    "summarize",
    "table1_clothing1m",
    "tsne_embed",
]
