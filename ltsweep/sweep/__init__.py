"""What a user writes, validated: the sweep file and the cluster profile; and what a sweep costs.

Owns `base` (strict models, YAML reading, the one-line `SpecError`), `schema` (the sweep
file), `ssl_settings` and `baseline_settings` (the per-method blocks, defaults from the
paper's protocol), `cluster_profile` (a SLURM allocation) and `estimate` (FLOPs and GPU
hours of units, from settings alone).

May import: pydantic, yaml and itself; nothing else of ltsweep, no torch.
"""
