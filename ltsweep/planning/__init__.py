"""A sweep's plan: its units, what of them is stored, and the `ltsweep plan` summary.

Owns `plan` (`make_plan` composes the three unit kinds; `KINDS` names them for the driver),
`state` (which units the run folder and the cache already hold), `describe` (the text of
`ltsweep plan`, with the GPU-hours estimate), `preflight` (what `ltsweep run` checks before
it writes anything), `gpu_budget` (whether the fine-tune groups fit their GPU share) and
`pretrains` (the pre-training curves of a run as a DataFrame, `ltsweep.load_pretrains`).

May import: `ltsweep.units`, `ltsweep.store`, `ltsweep.sweep`; no torch, no ray.
"""
