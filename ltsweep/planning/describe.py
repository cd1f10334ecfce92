"""`ltsweep plan`: what a sweep would run, what is stored, in a few lines. Imports no torch/ray."""

from __future__ import annotations

import math
from pathlib import Path

from ltsweep.planning.plan import make_plan
from ltsweep.planning.preflight import unit_gpus
from ltsweep.planning.state import assess
from ltsweep.sweep import precision
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.estimate import estimate
from ltsweep.sweep.schema import Sweep, check_label_file
from ltsweep.units.finetune import finetune_groups


def describe_plan(sweep: Sweep, run_dir: Path, cache_dir: Path, data_note: str = "") -> str:
    """The plan's text. It needs no data on disk (counts come from the data sets' known sizes),
    only a noisy-label file, whose checksum is part of the keys; `data_note` says what
    `ltsweep run` will miss."""
    if sweep.data.noisy_labels is not None:
        check_label_file(sweep.data.noisy_labels)
    plan = make_plan(sweep)
    a = assess(plan, run_dir, cache_dir, verify=False)
    groups = finetune_groups(sweep, a.finetunes_todo)
    c = a.counts()

    def stored(stage: str) -> str:
        cached = c[stage].get("cached", 0)
        return f"{c[stage]['done']} stored, " + (f"{cached} from the cache, " if cached else "")

    lines = [
        f"sweep {sweep.name!r}: {sweep.data.dataset}, SSL {', '.join(sweep.grid.ssl) or '-'}, "
        f"gamma {sweep.grid.gamma}, noise {sweep.grid.noise}",
        f"  pre-train jobs : {c['pretrain']['total']:>6}  ({c['pretrain']['done']} stored, {c['pretrain']['todo']} to run)",
        f"  fine-tune trials: {c['finetune']['total']:>5}  ({stored('finetune')}{c['finetune']['todo']} to run "
        f"in {len(groups)} Tune trial{'s' if len(groups) != 1 else ''})",
    ]
    if c["baseline"]["total"]:
        lines.append(
            f"  baseline runs  : {c['baseline']['total']:>6}  ({stored('baseline')}"
            f"{c['baseline']['todo']} to run)"
        )
    cost = estimate(sweep, a.pretrains_todo, a.finetunes_todo, a.baselines_todo)
    if not math.isfinite(cost.total_hours):
        raise SpecError(
            f"the GPU-hour estimate is {cost.total_hours} (pre-train {cost.pretrain:g}, baselines "
            f"{cost.baselines:g}, fine-tune {cost.finetune:g} FLOPs): some epochs, batch or "
            "image size is absurdly large"
        )
    lines.append(cost.line())
    lines.append(precision.describe(sweep.execution, unit_gpus(sweep)))
    lines.append(f"  run folder {run_dir}, cache {cache_dir}")
    if data_note:
        lines.append(f"  note: {data_note}")
    return "\n".join(lines)
