"""Integration tests on the single-node SLURM of cluster/start-slurm.sh (run it first).

Skipped, with the reason, when SLURM is not installed or its controller does not answer.
The callables submitted here are defined in this module and pickled by value (the job's
python cannot import the tests folder). Fixtures and helpers for sweep-through-SLURM tests:
`slurm_cluster` (the partition name), `local_profile` (cluster/local.yaml), `sweep_file`,
`result_within`, `wait_until`, `job_fields`, `signal_time_limit` and `release_requeued`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
import submitit

from ltsweep.engine import slurm
from ltsweep.sweep.cluster_profile import ClusterProfile, load_profile
from tests.helpers import LOCAL_PROFILE, release_requeued, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
JOB_TIMEOUT_S = 180.0

# the job's python cannot import tests/: send this module's callables by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def local_profile(slurm_cluster: str) -> ClusterProfile:
    profile = load_profile(LOCAL_PROFILE)
    assert profile.partition == slurm_cluster
    return profile


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    """A minimal valid sweep file (defaults everywhere); tests may overwrite its text."""
    path = tmp_path / "sweep.yaml"
    path.write_text("name: slurm-test\n")
    return path


@pytest.fixture
def job_ids() -> Iterator[list[str]]:
    """Append a job id to have its Ray processes stopped and the job cancelled at teardown
    (scancel orphans Ray on this test cluster: proctrack/linuxproc does not follow daemons)."""
    ids: list[str] = []
    yield ids
    for jid in ids:
        subprocess.run(["scancel", jid], capture_output=True, timeout=60)
        slurm.stop_job_ray(jid)


def result_within(job: submitit.Job[Any], timeout_s: float = JOB_TIMEOUT_S) -> Any:
    """job.result(), but failing after a bound instead of waiting forever."""
    wait_until(job.done, timeout_s, f"job {job.job_id} to finish (state {job.state})")
    return job.result()


def signal_time_limit(job_id: str) -> None:
    """Send what `--signal=USR2@N` sends before a time limit: SIGUSR2 to the job's tasks.
    (submitit's job._interrupt() also sends SIGTERM, which can race ahead and kill the
    `scontrol requeue` the handler has just started.)"""
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=60)


# --- callables run in the jobs (pickled by value) -----------------------------------------------


def square(x: int) -> dict[str, Any]:
    return {"square": x * x, "host": os.uname().nodename, "job": os.environ.get("SLURM_JOB_ID")}


class Counter(submitit.helpers.Checkpointable):
    """Waits to be requeued on its first run; returns what it saw on the next."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.checkpoints = 0

    def __call__(self) -> dict[str, int]:
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        (self.folder / f"started-{restart}").touch()
        if restart == 0:
            time.sleep(300)  # until requeued
        return {"restart": restart, "checkpoints": self.checkpoints}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        self.checkpoints += 1
        return super().checkpoint(*args, **kwargs)


def ray_probe_driver(sweep, run_dir, cache_dir, *, address, show_progress, stop_event) -> dict:
    """Stands in for ray_driver.run_sweep: proves the job's Ray cluster works."""
    import ray

    ray.init(address=address, log_to_driver=False)
    try:
        doubled = ray.get([ray.remote(lambda x: 2 * x).remote(i) for i in range(4)])
        cpus = ray.cluster_resources().get("CPU")
    finally:
        ray.shutdown()
    return {"sweep": sweep.name, "doubled": doubled, "cpus": cpus, "address": address}


def waiting_driver(sweep, run_dir, cache_dir, *, address, show_progress, stop_event) -> dict:
    """On a job's first run, works until stop_event is set; on a requeued run returns at once."""
    import ray

    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    ray.init(address=address, log_to_driver=False)
    (Path(run_dir) / f"driver-started-{restart}").touch()
    try:
        if restart == 0:
            stopped = stop_event.wait(300)
            (Path(run_dir) / f"driver-stopped-{restart}").write_text(str(stopped))
    finally:
        ray.shutdown()
    return {"restart": restart}


# --- tests -------------------------------------------------------------------------------------


def test_submitit_job_round_trip(local_profile: ClusterProfile, tmp_path: Path) -> None:
    executor = slurm.make_executor(local_profile, tmp_path / "logs" / "%j", job_name="rt")
    started = time.monotonic()
    job = executor.submit(square, 7)
    out = result_within(job, 120)
    print(f"submitit round trip: {time.monotonic() - started:.1f}s")
    assert out["square"] == 49 and out["job"] == job.job_id
    script = job.paths.submission_file.read_text()
    assert "#SBATCH --open-mode=append" in script and "#SBATCH --partition=debug" in script


def test_scontrol_requeue_reruns_a_job(local_profile: ClusterProfile, tmp_path: Path) -> None:
    executor = slurm.make_executor(local_profile, tmp_path / "logs" / "%j", job_name="rq")
    job = executor.submit(Counter(tmp_path))
    wait_until((tmp_path / "started-0").exists, 120, "the first run")
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=60)
    release_requeued(job.job_id)
    assert result_within(job) == {"restart": 1, "checkpoints": 0}
    log = job.paths.stdout.read_text()
    assert log.count("Starting with JobEnvironment") == 2  # --open-mode=append kept run 1


def test_preemption_signal_checkpoints_and_requeues(
    local_profile: ClusterProfile, tmp_path: Path
) -> None:
    executor = slurm.make_executor(local_profile, tmp_path / "logs" / "%j", job_name="pre")
    job = executor.submit(Counter(tmp_path))
    wait_until((tmp_path / "started-0").exists, 120, "the first run")
    signal_time_limit(job.job_id)
    release_requeued(job.job_id)
    assert result_within(job) == {"restart": 1, "checkpoints": 1}


def test_sweep_job_runs_its_driver_on_a_ray_cluster(
    local_profile: ClusterProfile, sweep_file: Path, tmp_path: Path, job_ids: list[str]
) -> None:
    run_dir = tmp_path / "run"
    started = time.monotonic()
    job = slurm.submit_sweep(
        sweep_file, run_dir, tmp_path / "cache", local_profile, driver=ray_probe_driver
    )
    job_ids.append(job.job_id)
    out = result_within(job)
    print(f"SweepJob round trip (Ray start, driver, stop): {time.monotonic() - started:.1f}s")
    assert out["sweep"] == "slurm-test" and out["doubled"] == [0, 2, 4, 6]
    assert out["cpus"] == local_profile.cpus_per_node
    assert out["address"].endswith(f":{slurm.ray_ports(local_profile, job.job_id).gcs}")
    record = slurm.read_record(run_dir)
    assert record["job_id"] == job.job_id and "finished_at" in record
    assert Path(record["log_folder"]) == run_dir.resolve() / "logs" / "slurm" / job.job_id
    assert wait_until(lambda: slurm.job_state(run_dir) == "COMPLETED", 60, "sacct: COMPLETED")
    assert slurm.stop_job_ray(job.job_id) == 0  # the job stopped its own Ray


def start_waiting_job(
    profile: ClusterProfile, sweep_file: Path, tmp_path: Path, job_ids: list[str]
) -> tuple[Any, Path]:
    """Submit a job whose driver waits to be stopped; return (job, run_dir) once it runs."""
    run_dir = tmp_path / "run"
    job = slurm.submit_sweep(
        sweep_file, run_dir, tmp_path / "cache", profile, driver=waiting_driver
    )
    job_ids.append(job.job_id)
    wait_until((run_dir / "driver-started-0").exists, 120, "the driver to start")
    return job, run_dir


def test_sweep_job_stops_its_driver_and_requeues(
    local_profile: ClusterProfile, sweep_file: Path, tmp_path: Path, job_ids: list[str]
) -> None:
    job, run_dir = start_waiting_job(local_profile, sweep_file, tmp_path, job_ids)
    signal_time_limit(job.job_id)
    release_requeued(job.job_id)
    assert result_within(job) == {"restart": 1}
    assert (run_dir / "driver-stopped-0").read_text() == "True"  # stop_event reached it
    assert slurm.read_record(run_dir)["requeues"] == 1


def test_sweep_job_gives_up_after_max_requeues(
    local_profile: ClusterProfile, sweep_file: Path, tmp_path: Path, job_ids: list[str]
) -> None:
    profile = local_profile.model_copy(update={"max_requeues": 0})
    job, run_dir = start_waiting_job(profile, sweep_file, tmp_path, job_ids)
    signal_time_limit(job.job_id)
    wait_until(job.done, JOB_TIMEOUT_S, "the job to end")
    with pytest.raises(Exception, match="checkpoint function returned None"):
        job.result()
    record = slurm.read_record(run_dir)
    assert record["requeues"] == 0 and "gave_up_at" in record
    assert "not requeued" in job.paths.stderr.read_text()


def test_cancel_keeps_the_run_folder(
    local_profile: ClusterProfile, sweep_file: Path, tmp_path: Path, job_ids: list[str]
) -> None:
    job, run_dir = start_waiting_job(local_profile, sweep_file, tmp_path, job_ids)
    assert slurm.job_state(run_dir) == "RUNNING"
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*") if p.is_file())
    assert slurm.cancel(run_dir) == job.job_id
    wait_until(lambda: (slurm.job_state(run_dir) or "").startswith("CANCELLED"), 60, "CANCELLED")
    after = {p.relative_to(run_dir) for p in run_dir.rglob("*") if p.is_file()}
    assert set(before) <= after
