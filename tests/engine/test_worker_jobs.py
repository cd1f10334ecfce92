"""Worker jobs without SLURM: when a worker joins, serves and leaves (the clock, SLURM's
answers and `ray start` are faked), what is submitted for them, and how status and cancel
see them. The real ones are in tests/integration/slurm/test_worker_jobs.py."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from ltsweep.engine import slurm, slurm_nodes, slurm_record, sweep_job, worker_job
from ltsweep.engine.driver_process import heartbeat
from ltsweep.engine.ray_node import ray_ports, render_node_bootstrap
from ltsweep.engine.tune_callbacks import ProgressCallback
from ltsweep.engine.worker_job import Head, WorkerJob, driver_waiting, read_head
from ltsweep.status import _slurm_line
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.cluster_profile import parse_profile

PROFILE = parse_profile(
    {"partition": "d", "cpus_per_node": 1, "time_limit": 30, "worker_idle_s": 10}
)


def record(run: Path, **fields) -> None:
    run.mkdir(parents=True, exist_ok=True)
    data = {"job_id": "7", "profile": PROFILE.model_dump(mode="json"), **fields}
    (run / "slurm.json").write_text(json.dumps(data))


class Clock:
    """time.monotonic advancing one second a call; sleep only advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(
        worker_job,
        "time",
        SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep, strftime=lambda f: "00:00:00"),
    )
    return fake


@pytest.fixture
def node(monkeypatch):
    """A node whose Ray starts and runs; the head answers; nothing else is true until set."""
    state = SimpleNamespace(started=[], raylet=True, head_up=True, units=False, slurm="RUNNING")
    monkeypatch.setattr(
        sweep_job, "start_ray", lambda argv, give_up, log: state.started.append(argv)
    )
    monkeypatch.setattr(worker_job, "raylet_running", lambda job, restart: state.raylet)
    monkeypatch.setattr(worker_job, "reachable", lambda host, port: state.head_up)
    monkeypatch.setattr(worker_job, "running_units", lambda job, restart: state.units)
    monkeypatch.setattr(worker_job, "job_state_now", lambda job: state.slurm)
    monkeypatch.setattr(worker_job, "stop_job_ray", lambda job, **kw: 0)
    return state


HEAD = Head(job_id="7", restart=0, address="10.0.0.1:12345")


def test_a_worker_joins_the_recorded_head_with_its_own_ports(tmp_path, node, clock):
    record(tmp_path, ray_address=HEAD.address)
    HEAD.done_marker(tmp_path).parent.mkdir(parents=True)
    threading.Timer(0.2, HEAD.done_marker(tmp_path).touch).start()
    heartbeat(tmp_path, running=True, pending=1)  # work waits: never idle
    why = WorkerJob(tmp_path, tmp_path / "cache", PROFILE)._serve_heads("9_1", 0, 0)
    assert why == "the driver is done"
    (argv,) = node.started
    own = ray_ports(PROFILE, "9_1")
    assert "--address=10.0.0.1:12345" in argv and "--head" not in argv
    assert f"--node-manager-port={own.node_manager}" in argv
    assert "--temp-dir=/tmp/ltsweep-ray-9_1" in argv


def test_a_worker_with_nothing_to_run_leaves_after_its_idle_time(tmp_path, node, clock):
    record(tmp_path, ray_address=HEAD.address)
    heartbeat(tmp_path, running=True, pending=0)
    job = WorkerJob(tmp_path, tmp_path / "cache", PROFILE)
    t0 = clock.now
    why = job._serve(HEAD, "9_0", 0, 0)
    assert why == "no unit to run here for 10s (none waiting)"
    assert 10 < clock.now - t0 < 10 + 4 * sweep_job.WORKER_POLL_S + 10


def test_a_unit_of_its_own_or_one_waiting_keeps_a_worker(tmp_path, node, clock):
    record(tmp_path, ray_address=HEAD.address)
    heartbeat(tmp_path, running=True, pending=0)
    node.units = True  # runs a unit: stays while it runs, then leaves once idle
    job = WorkerJob(tmp_path, tmp_path / "cache", PROFILE)
    real_sleep = clock.sleep

    def sleep(s: float) -> None:
        real_sleep(s)
        if clock.now > 100:
            node.units = False

    clock.sleep = sleep
    worker_job.time.sleep = sleep
    assert job._serve(HEAD, "9_0", 0, 0).startswith("no unit to run here")
    assert clock.now > 110


def test_a_worker_whose_ray_died_leaves(tmp_path, node, clock, monkeypatch):
    record(tmp_path, ray_address=HEAD.address)
    heartbeat(tmp_path, running=True, pending=3)
    seen = iter([True, True, False])
    monkeypatch.setattr(worker_job, "raylet_running", lambda job, restart: next(seen, False))
    why = WorkerJob(tmp_path, tmp_path, PROFILE)._serve(HEAD, "9_0", 0, 0)
    assert why.startswith("this node's Ray died")


def test_a_lost_head_is_waited_for_and_its_requeued_run_joined(tmp_path, node, clock, monkeypatch):
    record(tmp_path, ray_address=HEAD.address)
    served: list[Head] = []

    def serve(self, head, job_id, restart, gpus):
        served.append(head)
        if len(served) == 1:  # the head is lost; SLURM requeues its job, which starts again
            record(tmp_path, ray_address="10.0.0.2:12345", restart_count=1)
            return None
        return "the driver is done"

    monkeypatch.setattr(WorkerJob, "_serve", serve)
    why = WorkerJob(tmp_path, tmp_path, PROFILE)._serve_heads("9_0", 0, 0)
    assert why == "the driver is done"
    assert served == [HEAD, Head(job_id="7", restart=1, address="10.0.0.2:12345")]


def test_no_head_within_the_wait_leaves(tmp_path, node, clock):
    record(tmp_path)  # the sweep's job waits in the queue: no address yet
    node.slurm = "PENDING"
    why = WorkerJob(tmp_path, tmp_path, PROFILE)._serve_heads("9_0", 0, 0)
    assert why == f"no head of the sweep to join within {sweep_job.HEAD_WAIT_S:.0f}s"


def test_a_late_worker_leaves_at_once_without_the_node_check(tmp_path, node, monkeypatch):
    record(tmp_path, ray_address=HEAD.address)
    node.slurm = "COMPLETED"
    monkeypatch.setattr(
        worker_job.submitit, "JobEnvironment", lambda: SimpleNamespace(job_id="9_0", hostname="n2")
    )

    def no_check(*a, **kw):
        raise AssertionError("the node check ran for a sweep that has ended")

    monkeypatch.setattr(worker_job, "check_this_node", no_check)
    assert WorkerJob(tmp_path, tmp_path, PROFILE)() == (
        "the sweep's job 7 is COMPLETED: nothing to join"
    )


def test_a_worker_at_its_time_limit_says_so_and_stops_its_ray(tmp_path, node, monkeypatch, capsys):
    """submitit's SIGUSR2 handler raises in the serving loop (a timed-out job that is not
    checkpointable): the worker names why it leaves, stops its Ray, and lets submitit end
    the job without a requeue."""
    record(tmp_path, ray_address=HEAD.address)
    env = SimpleNamespace(job_id="9_0", hostname="n2")
    monkeypatch.setattr(worker_job.submitit, "JobEnvironment", lambda: env)
    monkeypatch.setattr(worker_job, "check_this_node", lambda *a, **kw: None)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)  # the job's environment, not the tests'
    monkeypatch.setattr(sweep_job, "ray_auth_env", lambda run_dir: {})
    monkeypatch.setattr(worker_job, "node_gpus", lambda profile: 0)
    monkeypatch.setattr(worker_job, "spawn_reaper", lambda *a: None)
    stopped = []
    monkeypatch.setattr(worker_job, "stop_job_ray", lambda job, **kw: stopped.append(job))

    def timed_out(*a):
        raise worker_job.UncompletedJobError("Job not requeued because: timed-out.")

    monkeypatch.setattr(WorkerJob, "_serve_heads", timed_out)
    with pytest.raises(worker_job.UncompletedJobError):
        WorkerJob(tmp_path, tmp_path, PROFILE)()
    assert stopped == ["9_0"]
    assert "worker job 9_0 on n2 leaves at its time limit (not requeued)" in capsys.readouterr().out


def test_a_head_that_ends_while_the_worker_joins_is_no_failure(tmp_path, node, clock, monkeypatch):
    record(tmp_path, ray_address=HEAD.address)
    marker = HEAD.done_marker(tmp_path)
    marker.parent.mkdir(parents=True)

    def start(argv, give_up, log):
        marker.touch()
        raise subprocess.CalledProcessError(1, argv)

    monkeypatch.setattr(sweep_job, "start_ray", start)
    job = WorkerJob(tmp_path, tmp_path, PROFILE)
    assert job._serve(HEAD, "9_0", 0, 0) == "the driver finished while this node joined"
    marker.unlink()

    def fails(argv, give_up, log):
        raise subprocess.CalledProcessError(1, argv)

    monkeypatch.setattr(sweep_job, "start_ray", fails)
    with pytest.raises(subprocess.CalledProcessError):  # a failed start with the head there
        job._serve(HEAD, "9_0", 0, 0)


def test_the_record_and_the_heartbeat_as_workers_read_them(tmp_path):
    assert read_head(tmp_path) is None and driver_waiting(tmp_path) is None
    record(tmp_path, restart_count=2, ray_address="h:1")
    assert read_head(tmp_path) == Head("7", 2, "h:1")
    (tmp_path / "slurm.json").write_text("{half")
    assert read_head(tmp_path) is None  # read again at the next poll
    heartbeat(tmp_path, running=True, pending=4)
    assert driver_waiting(tmp_path) == 4
    heartbeat(tmp_path, running=False)
    assert driver_waiting(tmp_path) is None


def test_the_driver_heartbeat_says_how_many_trials_wait(tmp_path):
    cb = ProgressCallback(None, tmp_path)
    trials = [SimpleNamespace(status=s) for s in ("PENDING", "RUNNING", "PENDING")]
    cb.on_step_begin(0, trials)
    assert json.loads((tmp_path / "driver.json").read_text())["trials_pending"] == 2
    (tmp_path / "driver.json").unlink()
    cb.on_step_begin(1, trials)  # unchanged: not written again
    assert not (tmp_path / "driver.json").exists()


# --- the submit side ---------------------------------------------------------------------------


def test_worker_jobs_need_a_sweep_job_that_still_runs(tmp_path, monkeypatch):
    with pytest.raises(SpecError, match="no SLURM job recorded"):
        slurm.submit_workers(tmp_path / "run", 2)
    record(tmp_path)
    monkeypatch.setattr(slurm, "job_state_now", lambda job: "COMPLETED")
    with pytest.raises(SpecError, match="job 7 is COMPLETED: worker jobs would have nothing"):
        slurm.submit_workers(tmp_path, 2)
    with pytest.raises(SpecError, match="--jobs: 0"):
        slurm.submit_workers(tmp_path, 0)


def test_a_worker_job_is_one_node_of_the_profile_for_its_own_time():
    prof = parse_profile(
        {
            "partition": "d",
            "nodes": 4,
            "cpus_per_node": 8,
            "gpus_per_node": 2,
            "time_limit": "04:00:00",
            "worker_time_limit": "00:45:00",
            "worker_jobs": 3,
        }
    )
    shape = slurm.worker_profile(prof)
    assert (shape.nodes, shape.time_limit, shape.gpus_per_node, shape.cpus_per_node) == (
        1,
        45,
        2,
        8,
    )
    assert (
        slurm.worker_profile(prof.model_copy(update={"worker_time_limit": None})).time_limit == 240
    )
    script = slurm.sbatch_script(shape, job_name="ltsweep-x-worker")
    assert "#SBATCH --nodes=1" in script and "#SBATCH --time=45" in script
    assert "#SBATCH --gres=gpu:2" in script


@pytest.mark.parametrize(
    "field,value,says",
    [
        ("worker_jobs", -1, "worker_jobs"),
        ("worker_idle_s", 5, "worker_idle_s"),
        ("worker_time_limit", "1:99:00", "worker_time_limit"),
    ],
)
def test_bad_worker_settings_name_their_field(field, value, says):
    with pytest.raises(SpecError, match=says):
        parse_profile({"partition": "d", "cpus_per_node": 1, "time_limit": 5, field: value})


def test_a_joining_node_takes_the_head_address_and_keeps_its_own_ports():
    argv = render_node_bootstrap(PROFILE, "12_3", ["head", "me"], 1, head_address="h:999")
    assert "--address=h:999" in argv
    assert f"--min-worker-port={ray_ports(PROFILE, '12_3').min_worker}" in argv


def test_status_counts_the_worker_jobs_of_the_current_sweep_job(tmp_path, monkeypatch):
    record(tmp_path)
    slurm_record.add_workers(tmp_path, "5", 2, for_job="3")  # joined an earlier job of the run
    slurm_record.add_workers(tmp_path, "8", 3, for_job="7")

    def output(argv):
        if argv[0] == "squeue":
            assert argv[argv.index("-j") + 1] == "8"
            return "RUNNING\nPENDING"
        return ""

    monkeypatch.setattr(slurm_nodes, "slurm_output", output)
    states = slurm.worker_states(tmp_path)
    assert states == {"RUNNING": 1, "PENDING": 1, "ENDED": 1}
    line = _slurm_line(
        {
            "record": {"job_id": "7"},
            "state": "RUNNING",
            "requeues": 0,
            "workers": states,
            "active_states": slurm.ACTIVE_STATES,
        }
    )
    assert "worker jobs: 1 ended, 1 pending, 1 running" in line


def test_cancel_stops_the_worker_jobs_too(tmp_path, monkeypatch):
    record(tmp_path)
    slurm_record.add_workers(tmp_path, "8", 3, for_job="7")
    ran: list[list[str]] = []
    monkeypatch.setattr(slurm.subprocess, "run", lambda argv, **kw: ran.append(argv))
    assert slurm.cancel(tmp_path) == "7"
    assert ran == [["scancel", "7", "8"]]


def test_a_damaged_worker_record_is_named(tmp_path, monkeypatch):
    (tmp_path / "workers.json").write_text("[1, 2")
    with pytest.raises(SpecError, match="workers.json: unreadable worker-job record"):
        slurm_record.read_workers(tmp_path)
    record(tmp_path)  # ... and cancel still stops the sweep's job
    ran: list[list[str]] = []
    monkeypatch.setattr(slurm.subprocess, "run", lambda argv, **kw: ran.append(argv))
    assert slurm.cancel(tmp_path) == "7" and ran == [["scancel", "7"]]
