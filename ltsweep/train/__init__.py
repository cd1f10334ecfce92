"""The trainers: what runs on a worker's CPU or GPU, knowing nothing of sweeps or schedulers.

Owns `selfsup` (the shared pre-training loop, one file per SSL method, the stored features),
`finetune` (many fine-tune trials trained as one stacked model) with `stacked_adam`,
`baselines` (CE / LA / SL / LA+SL, ELR, ELR+ and DivideMix on one shared epoch loop),
`inference` (eval-mode forward passes over a set of images), `batches` (where a step reads
its images: the subset on the device, or the host) and `resume` (a checkpoint's random
state, put back on whatever device the run resumes on).

May import: torch, `ltsweep.data`, `ltsweep.models`, `ltsweep.losses`, `augment`, `knn`,
`device`, `ltsweep.store` (atomic checkpoints, the feature cache); never `sweep`, `units`,
`planning` or `engine` (pyproject.toml's import-linter contracts). Settings arrive as objects
of the shape a `Protocol` here names (`selfsup.base.PretrainSettings`, which the sweep's
`SSLSettings` satisfy) or as plain values turned into the trainers' own dataclasses
(`baselines.registry`: a unit's params dict into, say, `ELRParams`).
"""
