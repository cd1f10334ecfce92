"""What a user writes, validated: the sweep file and the cluster profile; and what a sweep costs.

Owns `base` (strict models, YAML reading, the one-line `SpecError`), `schema` (the sweep
file), `ssl_settings` and `baseline_settings` (the per-method blocks, defaults from the
paper's protocol, and the registries `SSL_METHODS` and `BASELINE_METHODS`), `losses` (the
loss names and what each is made of), `precision` (what `execution.precision` resolves to),
`cluster_profile` (a SLURM allocation) and `estimate` (FLOPs and GPU hours of units, from
settings alone).

May import: pydantic, yaml, itself and `ltsweep.gpu_probe` (nvidia-smi); nothing else of
ltsweep, no torch.
"""
