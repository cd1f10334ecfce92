"""Single-stage baselines (CE, LA, SL, LA+SL from scratch, ELR, DivideMix) as units of a sweep.

Importing this package imports no torch (the plan uses `plan_baselines`); the trainers live
in `supervised`, `elr` and `dividemix` and are imported when a unit runs.
"""

from ltsweep.units.baseline import BaselineUnit, plan_baselines, run_baseline

__all__ = ["BaselineUnit", "plan_baselines", "run_baseline"]
