"""What is on disk, and how it gets there: the run folder, the shared cache, the results table.

Owns `atomic` (whole-file-or-nothing writes), `cache` (where every stored thing lives, the
checksummed feature files) and `results` (the Parquet results table, its rows, the pivot
`ltsweep results` prints).

May import: `ltsweep.__version__`, pyarrow (pandas and torch inside the functions that
return DataFrames or read tensors); no other layer of ltsweep, no torch at import.
"""
