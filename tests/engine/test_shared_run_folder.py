"""A SLURM job's nodes must see the run folder and the cache: a node-local path (/tmp, ...) is
refused before submitting a job of several nodes, a warning for one node, and a job that ended
without writing its log into the run folder is explained, not "not a run folder"."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ltsweep.engine import slurm
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.cluster_profile import load_profile
from tests.helpers import NODES_PROFILE, TINY_SWEEP

MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0
fs1:/export/tmp /tmp/shared nfs4 rw,relatime 0 0
fs1:/export/home /home nfs4 rw,relatime 0 0
"""


@pytest.fixture
def mounts(tmp_path, monkeypatch) -> None:
    path = tmp_path / "mounts"
    path.write_text(MOUNTS)
    monkeypatch.setattr(slurm, "MOUNTS", path)
    monkeypatch.delenv("TMPDIR", raising=False)
    # the python that submits is checked too: one on a shared path, wherever the tests' own
    # python lives (a fresh venv may well be under /tmp)
    monkeypatch.setattr(slurm.sys, "executable", "/home/u/venv/bin/python")


@pytest.mark.usefixtures("mounts")
def test_node_local_paths_are_known_unless_a_network_filesystem_is_there(monkeypatch):
    assert slurm.node_local_root("/tmp/x") == Path("/tmp")
    assert slurm.node_local_root("/tmp") == Path("/tmp")
    assert slurm.node_local_root("/dev/shm/runs/a") == Path("/dev/shm")
    assert slurm.node_local_root("/tmp/shared/runs/a") is None  # nfs4 mounted there
    assert slurm.node_local_root("/home/u/runs/a") is None
    assert slurm.node_local_root("/var/tmp/runs/a") is None
    assert slurm.node_local_root("/tmpfoo/a") is None
    monkeypatch.setenv("TMPDIR", "/scratch/local/job7")
    assert slurm.node_local_root("/scratch/local/job7/run") == Path("/scratch/local/job7")


@pytest.mark.usefixtures("mounts")
def test_a_multi_node_job_refuses_a_node_local_run_folder_in_one_line():
    profile = load_profile(NODES_PROFILE)
    assert profile.nodes > 1
    with pytest.raises(SpecError) as err:
        slurm.check_shared_folders(Path("/tmp/x"), Path("/tmp/.cache"), profile)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("--run-dir: /tmp/x is under /tmp, which each node of a SLURM job")
    assert "(so is /tmp/.cache)" in line
    assert "put it on a shared filesystem" in line
    with pytest.raises(SpecError, match=r"^--cache-dir \(or LTSWEEP_CACHE\): /dev/shm/c is"):
        slurm.check_shared_folders(Path("/home/u/run"), Path("/dev/shm/c"), profile)
    slurm.check_shared_folders(Path("/home/u/run"), Path("/home/u/.cache"), profile)


@pytest.mark.usefixtures("mounts")
def test_worker_jobs_make_a_one_node_job_a_sweep_of_several_nodes():
    profile = load_profile(NODES_PROFILE).model_copy(update={"nodes": 1, "worker_jobs": 2})
    with pytest.raises(SpecError, match=r"^--run-dir: /tmp/x is under /tmp"):
        slurm.check_shared_folders(Path("/tmp/x"), Path("/home/u/.cache"), profile)


@pytest.mark.usefixtures("mounts")
def test_a_python_the_nodes_cannot_see_is_refused(monkeypatch):
    """A venv under /tmp on the submitting machine does not exist on the job's nodes."""
    profile = load_profile(NODES_PROFILE)
    monkeypatch.setattr(slurm.sys, "executable", "/tmp/venv/bin/python")
    with pytest.raises(SpecError, match=r"^python \(the profile's `python`, or the one that "):
        slurm.check_shared_folders(Path("/home/u/run"), Path("/home/u/.cache"), profile)
    shared = profile.model_copy(update={"python": "/home/u/venv/bin/python"})
    slurm.check_shared_folders(Path("/home/u/run"), Path("/home/u/.cache"), shared)
    on_path = profile.model_copy(update={"python": "python3"})  # found on each node's PATH
    slurm.check_shared_folders(Path("/home/u/run"), Path("/home/u/.cache"), on_path)


@pytest.mark.usefixtures("mounts")
def test_a_one_node_job_is_warned_only():
    profile = load_profile(NODES_PROFILE).model_copy(update={"nodes": 1})
    said: list[str] = []
    slurm.check_shared_folders(Path("/tmp/x"), Path("/home/u/.cache"), profile, said.append)
    assert len(said) == 1 and said[0].startswith("warning: --run-dir: /tmp/x is under /tmp")


@pytest.mark.usefixtures("mounts")
def test_run_refuses_before_submitting_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """`ltsweep run --cluster` with a 3-node profile and --run-dir under /tmp: one line, exit
    2, no job (a fake sbatch that would record one), no run folder."""
    from ltsweep.cli import main

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    called = tmp_path / "sbatch-called"
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!/bin/sh\ntouch {called}\necho 'Submitted batch job 1'\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run = Path(f"/tmp/ltsweep-unseen-{os.getpid()}")
    assert not run.exists()
    code = main(
        ["run", str(TINY_SWEEP), "--cluster", str(NODES_PROFILE), "--run-dir", str(run)]
        + ["--cache-dir", str(tmp_path / "cache")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and f"--run-dir: {run} is under /tmp" in err[0], err
    assert not run.exists() and not called.exists()


def _record(run: Path, job_id: str = "41") -> Path:
    logs = run / "logs" / "slurm" / job_id
    logs.mkdir(parents=True)
    (run / "slurm.json").write_text(json.dumps({"job_id": job_id, "log_folder": str(logs)}))
    return logs


def test_a_failed_job_without_its_log_is_explained(tmp_path, monkeypatch):
    run = tmp_path / "run"
    logs = _record(run)
    monkeypatch.setattr(slurm, "job_state", lambda run_dir: "FAILED")
    line = slurm.unseen_run_folder(run)
    assert line is not None and "\n" not in line
    assert line.startswith(f"SLURM job 41 ended FAILED without writing its log into {logs}")
    assert "the job's nodes cannot see the run folder" in line
    (logs / "41_0_log.err").write_text("Traceback ...")  # it ran, and failed otherwise
    assert slurm.unseen_run_folder(run) is None


@pytest.mark.parametrize("state", ["PENDING", "RUNNING", "CANCELLED", "COMPLETED", None])
def test_only_a_failed_job_is_judged(tmp_path, monkeypatch, state):
    run = tmp_path / "run"
    _record(run)
    monkeypatch.setattr(slurm, "job_state", lambda run_dir: state)
    assert slurm.unseen_run_folder(run) is None
    assert slurm.unseen_run_folder(tmp_path / "no-record") is None
