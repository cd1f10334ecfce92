"""Content keys do not move: every unit key a sweep file plans is pinned in tests/data/*_keys.json.

A unit's key names its cache entry and its result rows, so a key that changes by accident
makes every stored pre-train, feature file, baseline checkpoint and result invisible to the
next run. The fixtures were written from the plan before the package was restructured by
layer; each test re-plans the sweep through today's code and asserts the same
keys, in the same order, and the same fine-tune group names (the result files' names).

A key change on purpose (a new output format) bumps `FORMAT_VERSION` and rewrites these
fixtures in the same commit, saying why.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ltsweep.planning.plan import make_plan
from ltsweep.sweep.schema import load_sweep, parse_sweep
from ltsweep.units.finetune import finetune_groups, group_name
from tests.helpers import REPO, TEST_DATA

ROOT = REPO
DATA = TEST_DATA
SWEEP_FILES = {
    "tiny": DATA / "tiny.yaml",
    "smoke": ROOT / "sweeps" / "smoke.yaml",
    "cifar10": ROOT / "sweeps" / "cifar10.yaml",
    "cifar100": ROOT / "sweeps" / "cifar100.yaml",
    "cifar10-cpu": ROOT / "sweeps" / "cifar10-cpu.yaml",
    # the CPU reproduction before it moved to Barlow Twins at width 16 (the run in
    # the README before then): its keys stay pinned
    "cifar10-cpu-simsiam": DATA / "cifar10-cpu-simsiam.yaml",
    "clothing1m": ROOT / "sweeps" / "clothing1m.yaml",
}


def plan_keys(sweep) -> dict[str, list[str]]:
    """The keys of every unit the plan holds, in plan order, and the fine-tune group names."""
    plan = make_plan(sweep)
    return {
        "pretrain": [u.key for u in plan.pretrains],
        "finetune": [u.key for u in plan.finetunes],
        "baseline": [u.key for u in plan.baselines],
        "finetune_groups": [group_name(g) for g in finetune_groups(sweep, plan.finetunes)],
    }


def cifar_n_label_file(folder: Path) -> Path:
    """A CIFAR-10N-style label file whose bytes (and so whose sha256) never change."""
    labels = np.arange(50_000, dtype=np.int64) % 10
    path = folder / "cifar10n.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in (("worse_label", labels), ("aggre_label", (labels + 1) % 10)):
            buf = io.BytesIO()
            np.save(buf, array)
            archive.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=(2020, 1, 1, 0, 0, 0)), buf.getvalue()
            )
    return path


def cifar_n_sweep(folder: Path):
    """Real noisy labels: their file's content (not its path) is in the fine-tune and baseline keys."""
    return parse_sweep(
        {
            "name": "cifar-n",
            "data": {
                "dataset": "cifar10",
                # the file has no clean labels to measure its noise against: the rate is
                # given (40 %: DivideMix's settings follow it, the head modes do not change)
                "noisy_labels": {
                    "path": str(cifar_n_label_file(folder)),
                    "key": "worse_label",
                    "noise_rate": 0.4,
                },
            },
            "grid": {
                "ssl": ["simsiam", "simclr"],
                "gamma": [1, 50],
                "noise_type": "cifar-n",
                "noise": [0.0],
                "losses": ["ce", "la+sl"],
                "pretrain_epochs": [400, 800],
            },
            "baselines": {"methods": ["ce", "elr", "dividemix"]},
        }
    )


@pytest.fixture(autouse=True)
def fp32_host(tmp_path, monkeypatch):
    """Plan as on a CPU without native bf16: `precision: auto` resolves to fp32 there, as every
    CPU sweep ran before precision existed (on a bf16 CPU the CPU sweeps' keys gain
    `precision: bf16`, on purpose: tests/sweep/test_precision.py), and with no GPU on the
    planning host (a V100 there would make `auto` fp16: tests/sweep/test_precision_by_gpu.py)."""
    from ltsweep import gpu_probe
    from ltsweep.sweep import precision

    monkeypatch.setattr(gpu_probe, "visible_gpus", lambda: ())
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)


def _pinned(name: str) -> dict[str, list[str]]:
    return json.loads((DATA / f"{name}_keys.json").read_text())


@pytest.mark.parametrize("name", sorted(SWEEP_FILES))
def test_sweep_file_keys_are_unchanged(name):
    assert plan_keys(load_sweep(SWEEP_FILES[name])) == _pinned(name)


def test_cifar_n_keys_are_unchanged(tmp_path):
    got = plan_keys(cifar_n_sweep(tmp_path))
    assert got == _pinned("cifar-n")
    assert got["baseline"]  # the label file's identity is in the baselines' keys too
