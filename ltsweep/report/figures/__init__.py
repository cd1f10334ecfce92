"""The paper's figures (3-8) and Table 1, drawn from the results table.

Every function takes the DataFrame of `ltsweep.store.results.load_results` (or tidy arrays for the
t-SNE) and returns a new `matplotlib.figure.Figure` rendered with the Agg canvas: no pyplot,
so nothing leaks into a global figure list and the functions are safe in a server, a test or
a notebook. Each figure carries the numbers it plots as `fig.ltsweep_data` (a tidy
DataFrame: accuracies in percent, `noise` and `gamma` as in the table), so a test or the
report can check and print exactly what is drawn rather than re-deriving it.

Conventions shared by all figures:
- Mean and error bar are taken over every row of a cell, i.e. over `seed` and `data_seed`;
  the error bar is the sample standard deviation (ddof=1), 0 when the cell has one row.
- Two-stage rows use the longest pre-training of each (dataset, method, gamma) encoder
  (`final_encoders`): a sweep for Fig. 6 also stores fine-tunes of earlier checkpoints, and
  mixing them in would mix different encoders. Fig. 6 itself uses every epoch.
- Single-stage CE/LA/SL/LA+SL baselines are matched to the two-stage losses by their method
  name (SL alone is CE+SL), whatever their `loss` column says.
- A figure the data cannot support raises `ValueError` with the reason; the report catches
  it and lists the figure as skipped.

Owns `base` (orders, display names, the rows a figure plots, drawing helpers), `accuracy`
(Figs. 3-5, Table 1) and `encoders` (Fig. 6, Figs. 7-8, the pre-training curves). Imports
pandas, numpy and matplotlib's Agg canvas (scikit-learn for the t-SNE, when it is drawn);
nothing else of ltsweep: the results table's columns (and `load_pretrains`') are its
interface.
"""

from ltsweep.report.figures.accuracy import (
    fig3_loss_gain,
    fig4_two_vs_single_stage,
    fig5_methods_vs_noise,
    table1_clothing1m,
)
from ltsweep.report.figures.base import (
    BASELINE_ORDER,
    LOSS_ORDER,
    SINGLE_STAGE_LOSS,
    SSL_ORDER,
    dataset_label,
    final_encoders,
    fmt_num,
    label,
    measured_noise,
    ordered,
    summarize,
)
from ltsweep.report.figures.encoders import (
    fig6_pretrain_epochs,
    fig78_tsne,
    fig_pretrain_curves,
    knn_separability,
    tsne_embed,
)

__all__ = [
    "SSL_ORDER",
    "LOSS_ORDER",
    "BASELINE_ORDER",
    "SINGLE_STAGE_LOSS",
    "label",
    "dataset_label",
    "fmt_num",
    "ordered",
    "final_encoders",
    "measured_noise",
    "summarize",
    "fig3_loss_gain",
    "fig4_two_vs_single_stage",
    "fig5_methods_vs_noise",
    "table1_clothing1m",
    "fig6_pretrain_epochs",
    "fig78_tsne",
    "fig_pretrain_curves",
    "tsne_embed",
    "knn_separability",
]

#: the figure and table functions, in the report's order (it draws a t-SNE per dataset,
#: `fig78_tsne_<dataset>`)
FIGURE_NAMES = tuple(name for name in __all__ if name.startswith(("fig", "table")))
