"""Self-supervised pre-training: one loop (`loop`), one short file per method, the features.

Owns `base` (what a method is, the settings it reads, and the registry that builds one by
name: the names of `ltsweep.sweep.ssl_settings.SSL_METHODS`), `simsiam`,
`simclr`, `byol`, `barlow` (a method's heads and loss), `loop` (optimiser, schedule,
augmentation, kNN monitor, exact-resume checkpoints) and `features` (the frozen features a
pre-train stores for its fine-tunes).

May import: torch, `ltsweep.models`, `ltsweep.data`, `augment`, `knn`, `device`,
`ltsweep.train.inference`, `ltsweep.store`; not `ltsweep.sweep`.
"""
