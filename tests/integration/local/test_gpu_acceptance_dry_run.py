"""benchmarks/gpu_acceptance.sh --dry-run: every step of the first GPU's acceptance at toy
sizes on the CPU, so that the script works the day a GPU is there."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow

SECTIONS = [
    "## 1. ltsweep doctor",
    "## 2. pytest -m gpu",
    "## 3. Speed",
    "### Pre-train step (img/s)",
    "### Fine-tune fan-out (stacked linear heads)",
    "### One baseline epoch",
    "## 4. ",
    "## Elapsed",
]


def test_the_dry_run_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "acceptance"
    env = {k: v for k, v in os.environ.items() if k != "LTSWEEP_DATA"}  # the digits stand-in
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_acceptance.sh"), "--dry-run", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    index = (out / "index.md").read_text()
    positions = [index.find(s) for s in SECTIONS]
    assert all(p >= 0 for p in positions), [s for s in SECTIONS if s not in index]
    assert positions == sorted(positions), "sections out of order"
    assert "Exit status 0." in index and "CPU only" in index
    assert "no CUDA device: torch.cuda.is_available() is False" in index
    for method in ("simclr", "simsiam", "byol", "barlow"):
        assert re.search(rf"^\| {method} \| [\d.]+ \| [\d.]+ \|", index, re.M), method
    assert re.search(r"^\| 12 \| 5 \| [\d.]+ \| [\d.e+]+ \|", index, re.M)
    # the two-stage and single-stage rows at the three noise levels
    assert re.search(r"stage\s+method\s+gamma\s+loss\s+0%\s+40%\s+80%", index)
    assert index.count("single-stage") >= 2 and "two-stage" in index
    assert "FAILED" not in index and "| total |" in index


def test_a_bad_option_is_one_line_and_exit_2(tmp_path: Path) -> None:
    script = str(REPO / "benchmarks" / "gpu_acceptance.sh")
    for args in (["--minutes", "zero"], ["--frobnicate"]):
        done = subprocess.run(
            ["bash", script, *args, "--out", str(tmp_path / "x")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "x").exists()
