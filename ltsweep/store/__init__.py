"""What is on disk, and how it gets there: the run folder, the shared cache, the results table.

Owns `atomic` (whole-file-or-nothing writes), `cache` (where every stored thing lives, the
checksummed feature files), `results` (the Parquet results table and its rows),
`results_view` (the pivot `ltsweep results` prints), `shared_rows` (result rows kept in the
cache for every run that shares it), `curves` (a pre-train's per-epoch records),
`unit_progress` (how far a running unit is) and `lock` (one driver per run folder).

May import: `ltsweep.version`, pyarrow (pandas and torch inside the functions that
return DataFrames or read tensors); no other layer of ltsweep, no torch at import.
"""
