"""The three kinds of unit of work: each kind in one module, keyed, with its needs and its run.

- `pretrain`: one encoder per (SSL method, gamma, data seed); stores features per epoch;
- `finetune`: heads on those features, one trial per (pre-train epoch, noise, loss, head,
  seed), run in stacked groups;
- `baseline`: a single-stage network per (method, gamma, noise, seed, data seed);
- `base`: what they share (content keys, the label file's identity, `RunContext`, writing
  rows or recording a failure).

Each module gives its unit dataclass, `plan_*` (the units of a sweep), `resources`, `config`
(the Tune config of a unit or group) and `run_config` / `run_*` (run it in a worker).

May import at module level: `ltsweep.sweep`, `ltsweep.store` and itself, no torch. The
`run_*` functions import `ltsweep.data`, `ltsweep.train`, `device` and `metrics` when they
run, which keeps torch out of planning.
"""
