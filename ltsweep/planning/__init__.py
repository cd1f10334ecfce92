"""A sweep's plan: its units, what of them is stored, and the `ltsweep plan` summary.

Owns `plan` (`make_plan` composes the three unit kinds; `KINDS` names them for the driver),
`state` (which units the run folder and the cache already hold) and `describe` (the text of
`ltsweep plan`, with the GPU-hours estimate).

May import: `ltsweep.units`, `ltsweep.store`, `ltsweep.sweep`; no torch, no ray.
"""
