"""A run folder the job's nodes cannot see, on the real 3-node test SLURM (each node its own
/tmp): refused before submitting a job of several nodes; a one-node job is warned about, and
when it fails the submitting `run --wait` says why instead of "not a run folder", with no job
left behind. Skipped, with the reason, unless the 3 namespaced nodes run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import NODES_PROFILE, TINY_SWEEP, ltsweep_cmd

pytestmark = [pytest.mark.slurm]


@pytest.fixture
def private_run(tmp_path: Path):
    """A run folder under this machine's /tmp, which no node sees; removed afterwards."""
    run = Path(f"/tmp/ltsweep-private-{os.getpid()}-{os.urandom(3).hex()}")
    yield run
    shutil.rmtree(run, ignore_errors=True)


def _jobs() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30)
    return set(out.stdout.split())


@pytest.mark.usefixtures("nodes")
def test_a_three_node_job_is_refused_before_it_is_submitted(tmp_path, private_run):
    before = _jobs()
    done = ltsweep_cmd(
        "run", str(TINY_SWEEP), "--cluster", str(NODES_PROFILE), "--run-dir", str(private_run),
        "--cache-dir", str(tmp_path / "cache"), "--wait", cwd=tmp_path, timeout=120,
    )  # fmt: skip
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(err) == 1 and f"--run-dir: {private_run} is under /tmp" in err[0], err
    assert "cannot see it; put it on a shared filesystem" in err[0]
    assert not private_run.exists()
    assert _jobs() <= before  # nothing submitted


@pytest.mark.usefixtures("nodes")
def test_a_one_node_job_that_cannot_see_it_is_explained_and_gone(tmp_path, private_run):
    profile = yaml.safe_load(NODES_PROFILE.read_text()) | {"nodes": 1}
    one_node = tmp_path / "one-node.yaml"
    one_node.write_text(yaml.safe_dump(profile))
    done = ltsweep_cmd(
        "run", str(TINY_SWEEP), "--cluster", str(one_node), "--run-dir", str(private_run),
        "--cache-dir", str(tmp_path / "cache"), "--wait", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert err[0].startswith(f"ltsweep: warning: --run-dir: {private_run} is under /tmp"), err
    assert err[-1].startswith("ltsweep: error: SLURM job "), err
    assert "ended FAILED without writing its log" in err[-1]
    assert "the job's nodes cannot see the run folder" in err[-1]
    assert "NotARunFolder" not in done.stderr and "Traceback" not in done.stderr
    job_id = err[-1].split()[3]
    assert job_id not in _jobs()  # no job left running for nothing
