"""Single-stage baselines trained from scratch: CE, LA, SL, LA+SL, ELR, ELR+ and DivideMix.

Owns `common` (the cell's training set, the network, augmentation, schedule, checkpoint
files), `loop` (`fit`: the one epoch loop, resume and checkpointing every method shares;
a method is a `Method` that says what an epoch does), `supervised` (the fine-tune losses on
the whole network), `elr`, `elr_plus` and `dividemix` (the methods and their hand-checkable
pieces), and `registry` (each name's params dataclass and method: the names of
`ltsweep.sweep.baseline_settings.BASELINE_METHODS`).

May import: torch, scikit-learn (DivideMix's GMM), `ltsweep.models`, `ltsweep.data`,
`ltsweep.losses`, `augment`, `device`, `ltsweep.train.inference`, `ltsweep.store.atomic`.
"""
