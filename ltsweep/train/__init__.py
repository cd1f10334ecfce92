"""The trainers: what runs on a worker's CPU or GPU, knowing nothing of sweeps or schedulers.

Owns `selfsup` (the shared pre-training loop, one file per SSL method, the stored features),
`finetune` (many fine-tune trials trained as one stacked model) with `stacked_adam`,
`baselines` (CE / LA / SL / LA+SL, ELR and DivideMix on one shared epoch loop) and
`inference` (eval-mode forward passes over a set of images).

May import: torch, `ltsweep.data`, `ltsweep.models`, `ltsweep.losses`, `augment`, `knn`,
`device`, `ltsweep.store` (atomic checkpoints, the feature cache) and `ltsweep.sweep`
(settings types); never `units`, `planning` or `engine`.
"""
