"""Cluster profiles and what ltsweep.engine.slurm renders from them: no SLURM needed."""

from __future__ import annotations

import shlex
import subprocess
import sys
import threading
from pathlib import Path

import cloudpickle
import pytest

from ltsweep.engine import slurm, sweep_job
from ltsweep.sweep.cluster_profile import ClusterProfile, load_profile, parse_profile
from ltsweep.sweep.schema import SpecError
from tests.helpers import REPO

CLUSTER = REPO / "cluster"
HOSTS = ["gpu-a01", "gpu-a02", "gpu-a03", "gpu-a04"]


def big_profile(**overrides: object) -> ClusterProfile:
    data: dict[str, object] = {
        "partition": "gpu",
        "account": "lab",
        "nodes": 4,
        "gpus_per_node": 4,
        "cpus_per_node": 32,
        "mem_gb": 240,
        "time_limit": "12:00:00",
        "constraint": "a100",
        "qos": "high",
        "extra_sbatch": ["--exclusive", "--mail-type=FAIL"],
        "setup": ["module load cuda/12.4", "source /opt/venv/bin/activate"],
    }
    data.update(overrides)
    return parse_profile(data, "big.yaml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


# --- the profile files and their validation ----------------------------------------------------


def test_shipped_profiles_load() -> None:
    local = load_profile(CLUSTER / "local.yaml")
    assert (local.partition, local.nodes, local.gpus_per_node, local.cpus_per_node) == (
        "debug",
        1,
        0,
        2,
    )
    assert local.time_limit <= 60
    example = load_profile(CLUSTER / "slurm.yaml")  # a one-node sweep job + 3 worker jobs
    assert (example.nodes, example.worker_jobs, example.gpus_per_node) == (1, 3, 4)
    workers = load_profile(CLUSTER / "local-workers.yaml")
    assert (workers.nodes, workers.worker_jobs, workers.cpus_per_node) == (1, 2, 1)
    assert workers.mem_gb is not None and 2 * workers.mem_gb * 1000 > 6000  # a job per node


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("partition: debug\ncpus_per_node: 2\ntime_limit: 5\nnodes: 0\n", "nodes: 0:"),
        ("partition: debug\ncpus_per_node: 2\ntime_limit: 5\ngpus: 1\n", "unknown key 'gpus'"),
        ("cpus_per_node: 2\ntime_limit: 5\n", "partition: required field is missing"),
        ("partition: debug\ntime_limit: 5\n", "cpus_per_node: required field is missing"),
        ("partition: debug\ncpus_per_node: 2\ntime_limit: 1:2:x\n", "time_limit: '1:2:x'"),
        ("partition: debug\ncpus_per_node: 2\ntime_limit: 0\n", "time_limit: 0:"),
        ("partition: d\ncpus_per_node: 2\ntime_limit: 5\nmem: lots\n", "mem: 'lots'"),
        (
            "partition: d\ncpus_per_node: 2\ntime_limit: 5\nmem: 4G\nmem_gb: 4\n",
            "mem: give mem_gb or mem, not both",
        ),
        (
            "partition: d\ncpus_per_node: 2\ntime_limit: 5\nextra_sbatch: [exclusive]\n",
            "extra_sbatch[0]: 'exclusive' is not of the form --key=value",
        ),
        (
            "partition: d\ncpus_per_node: 2\ntime_limit: 5\nextra_sbatch: [--gres=gpu:2]\n",
            "extra_sbatch[0]: '--gres=gpu:2': --gres is set by the profile field gpus_per_node",
        ),
        (
            "partition: d\ncpus_per_node: 2\ntime_limit: 5\nray_port_base: 80\n",
            "ray_port_base: 80:",
        ),
        ("partition: d\ncpus_per_node: 2\ntime_limit: 5\nmax_requeues: -1\n", "max_requeues"),
        ("- a list\n", "a cluster profile is a YAML mapping"),
        ("partition: [unclosed\n", "malformed YAML"),
    ],
)
def test_errors_name_the_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_profile(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    assert expected in message, message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such cluster profile"):
        load_profile(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("value", "minutes"),
    [(45, 45), ("45", 45), ("01:30:00", 90), ("1-00:00:00", 1440), ("00:00:30", 1)],
)
def test_time_limit_is_stored_in_minutes(value: object, minutes: int) -> None:
    assert big_profile(time_limit=value).time_limit == minutes


def test_profile_is_frozen() -> None:
    with pytest.raises(Exception, match="frozen"):
        big_profile().nodes = 2  # type: ignore[misc]


def test_memory_in_sbatch_syntax() -> None:
    assert big_profile(mem_gb=240).sbatch_mem() == "240G"
    assert big_profile(mem_gb=1.5).sbatch_mem() == "1536M"
    assert big_profile(mem_gb=None, mem="0").sbatch_mem() == "0"
    assert big_profile(mem_gb=None).sbatch_mem() is None


def test_no_torch_import() -> None:
    code = "import sys, ltsweep.sweep.cluster_profile; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- the sbatch script submitit writes ---------------------------------------------------------


def test_sbatch_text_of_a_four_node_gpu_profile() -> None:
    text = slurm.sbatch_script(big_profile(), "/runs/c100/logs/slurm/%j", job_name="ltsweep-c100")
    lines = text.splitlines()
    for expected in [
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gres=gpu:4",
        "#SBATCH --cpus-per-task=32",
        "#SBATCH --mem=240G",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --constraint=a100",
        "#SBATCH --qos=high",
        "#SBATCH --time=720",
        "#SBATCH --open-mode=append",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --exclusive",
        "#SBATCH --mail-type=FAIL",
        "#SBATCH --job-name=ltsweep-c100",
        "#SBATCH --output=/runs/c100/logs/slurm/%j/%j_0_log.out",
        "module load cuda/12.4",
        "source /opt/venv/bin/activate",
    ]:
        assert expected in lines, f"{expected!r} not in:\n{text}"
    # the setup lines run, in order, before the job's python
    srun = next(i for i, line in enumerate(lines) if line.startswith("srun "))
    assert (
        lines.index("module load cuda/12.4") < lines.index("source /opt/venv/bin/activate") < srun
    )
    assert "submitit.core._submit /runs/c100/logs/slurm/%j" in lines[srun]


def test_no_gpu_request_without_gpus() -> None:
    text = slurm.sbatch_script(big_profile(gpus_per_node=0, mem_gb=None))
    assert "--gres" not in text and "--gpus" not in text and "--mem" not in text


def test_a_lost_node_keeps_the_job_unless_the_profile_says_no() -> None:
    """no_kill (the default): sbatch keeps the allocation when a node fails and srun keeps
    the other tasks (a task that fails on a live node still ends the step: -K stays)."""
    lines = slurm.sbatch_script(big_profile()).splitlines()
    srun = next(line for line in lines if line.startswith("srun ")).split()
    assert "#SBATCH --no-kill" in lines
    assert "--no-kill" in srun and "--kill-on-bad-exit=1" in srun
    assert srun.index("--no-kill") < srun.index("-m")  # srun's option, not python's
    text = slurm.sbatch_script(big_profile(no_kill=False))
    assert "--no-kill" not in text and "--kill-on-bad-exit=1" in text
    with pytest.raises(SpecError, match=r"--no-kill is set by the profile field no_kill"):
        big_profile(extra_sbatch=["--no-kill"])


def test_executor_parameters_are_valid_for_submitit() -> None:
    params = slurm.executor_parameters(big_profile(), "x")
    assert params["ntasks_per_node"] == 1 and params["nodes"] == 4
    assert params["additional_parameters"]["requeue"] is True


# --- the Ray bootstrap on each node ------------------------------------------------------------


def option(argv: list[str], name: str) -> str | None:
    for arg in argv:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def test_bootstrap_argv_of_head_and_worker() -> None:
    prof = big_profile()
    head = slurm.render_node_bootstrap(prof, "123456", HOSTS, 0)
    worker = slurm.render_node_bootstrap(prof, "123456", HOSTS, 2)
    ports = slurm.ray_ports(prof, "123456")
    assert head[1:4] == ["-m", "ray.scripts.scripts", "start"]
    assert "--head" in head and option(head, "address") is None
    assert option(head, "port") == str(ports.gcs)
    assert option(head, "include-dashboard") == "false"
    assert "--head" not in worker
    assert option(worker, "address") == f"gpu-a01:{ports.gcs}"
    for argv in (head, worker):
        assert option(argv, "num-gpus") == "4"
        assert option(argv, "num-cpus") == "32"
        assert option(argv, "node-manager-port") == str(ports.node_manager)
        assert option(argv, "object-manager-port") == str(ports.object_manager)
        assert option(argv, "min-worker-port") == str(ports.min_worker)
        assert option(argv, "max-worker-port") == str(ports.max_worker)
        temp = option(argv, "temp-dir")
        assert temp == "/tmp/ltsweep-ray-123456"
        socket = f"{temp}/session_2026-11-24_19-10-51_150443_4194304/sockets/plasma_store"
        assert len(socket.encode()) < 107
    explicit = slurm.render_node_bootstrap(
        prof, "123456", HOSTS, 1, head_ip="10.0.0.1", node_ip="10.0.0.2"
    )
    assert option(explicit, "address") == f"10.0.0.1:{ports.gcs}"
    assert option(explicit, "node-ip-address") == "10.0.0.2"


def test_ports_come_from_the_job_id() -> None:
    prof = big_profile()
    a, b = slurm.ray_ports(prof, "1000"), slurm.ray_ports(prof, "1001")
    assert a != b
    for ports in (a, b):
        values = [v for k, v in vars(ports).items() if k != "max_worker"]
        assert len(set(values)) == len(values)
        assert 1024 < ports.gcs and ports.max_worker < 32768  # below the ephemeral range
        assert ports.max_worker - ports.min_worker >= 200
    # the two blocks do not overlap
    assert a.max_worker < b.gcs or b.max_worker < a.gcs
    fixed = big_profile(ray_port_base=21000)
    assert slurm.ray_ports(fixed, "5").gcs == slurm.ray_ports(fixed, "6").gcs == 21000


def test_bad_job_id_and_rank() -> None:
    with pytest.raises(ValueError, match="job id"):
        slurm.ray_ports(big_profile(), "12; rm -rf /")
    with pytest.raises(ValueError, match="rank"):
        slurm.render_node_bootstrap(big_profile(), "12", HOSTS, 4)


def test_shell_metacharacters_stay_quoted_or_single_arguments() -> None:
    evil = "; rm -rf /"
    prof = big_profile(
        partition=f"gpu{evil}",
        extra_sbatch=[f"--comment=x{evil}"],
        python=f"/opt/my env/python{evil}",
    )
    text = slurm.sbatch_script(prof, "/runs/x/%j")
    assert f"#SBATCH --partition={shlex.quote('gpu' + evil)}" in text
    assert f"#SBATCH --comment={shlex.quote('x' + evil)}" in text
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert shlex.quote(f"/opt/my env/python{evil}") in srun
    # a hostile hostname stays inside one argv element: nothing is parsed by a shell
    argv = slurm.render_node_bootstrap(prof, "77", [f"node1{evil}", "node2"], 1)
    assert [a for a in argv if "rm -rf" in a] == [
        f"--address=node1{evil}:{slurm.ray_ports(prof, '77').gcs}"
    ]
    source = Path(slurm.__file__).read_text()
    assert "shell=True" not in source and "os.system" not in source


# --- run record and checkpoint logic, without SLURM --------------------------------------------


def test_no_record_means_no_job(tmp_path: Path) -> None:
    assert slurm.read_record(tmp_path) is None
    assert slurm.job_state(tmp_path) is None
    assert slurm.cancel(tmp_path) is None
    assert slurm.load_job(tmp_path) is None


def test_checkpoint_stops_the_driver_and_counts_requeues(tmp_path: Path) -> None:
    from ltsweep.sweep.schema import Sweep

    prof = parse_profile({"partition": "d", "cpus_per_node": 1, "time_limit": 5, "max_requeues": 1})
    job = slurm.SweepJob(Sweep(name="t"), tmp_path, tmp_path / "cache", prof)
    stopped = threading.Event()
    job._stop = threading.Event()
    job._thread = threading.Thread(target=lambda: stopped.set() if job._stop.wait(30) else None)
    job._thread.start()

    again = job.checkpoint()
    assert stopped.is_set() and not job._thread.is_alive()
    assert again is not None and again.function is job and job.requeues == 1
    assert slurm.read_record(tmp_path)["requeues"] == 1
    # what submitit pickles for the requeued run: no thread, no event
    clone = cloudpickle.loads(cloudpickle.dumps(again.function))
    assert clone.requeues == 1 and clone._stop is None and clone._thread is None

    assert clone.checkpoint() is None  # a second requeue would exceed max_requeues=1
    record = slurm.read_record(tmp_path)
    assert record["requeues"] == 1 and "gave_up_at" in record


def test_checkpoint_records_giving_up_before_it_waits_for_the_driver(tmp_path: Path) -> None:
    """SLURM may send SIGUSR2 in the same pass as the time-limit kill, SIGKILL following
    KillWait seconds later: the decision is on disk while the driver is still stopping."""
    from ltsweep.sweep.schema import Sweep

    prof = parse_profile({"partition": "d", "cpus_per_node": 1, "time_limit": 5, "max_requeues": 0})
    job = slurm.SweepJob(Sweep(name="t"), tmp_path, tmp_path / "cache", prof)
    seen: dict = {}
    job._stop = threading.Event()

    def driver() -> None:  # stops only after it has seen what the record said
        job._stop.wait(30)
        seen.update(slurm.read_record(tmp_path) or {})

    job._thread = threading.Thread(target=driver)
    job._thread.start()
    assert job.checkpoint() is None
    assert "gave_up_at" in seen


def test_worker_waits_for_the_driver_or_a_lost_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ltsweep.sweep.schema import Sweep

    prof = parse_profile({"partition": "d", "cpus_per_node": 1, "time_limit": 5})
    job = slurm.SweepJob(Sweep(name="t"), tmp_path, tmp_path / "cache", prof)
    started: list[list[str]] = []
    monkeypatch.setattr(job, "_start_ray", started.append)
    monkeypatch.setattr(sweep_job, "WORKER_POLL_S", 0.05)
    reachable = [True]
    monkeypatch.setattr(sweep_job, "reachable", lambda host, port: reachable[0])
    monkeypatch.setattr(sweep_job, "wait_reachable", lambda host, port, timeout_s: True)
    marker = tmp_path / "driver-done.0"
    threading.Timer(0.3, marker.touch).start()
    job._run_worker(["ray", "start"], "head", 1234, marker)  # returns once the marker exists
    assert started == [["ray", "start"]] and marker.exists()

    reachable[0] = False
    monkeypatch.setattr(sweep_job, "HEAD_LOST_S", 0.2)
    job._run_worker(["ray", "start"], "head", 1234, tmp_path / "never")  # head gone: leaves


def test_a_worker_that_joins_after_the_driver_finished_leaves_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver with nothing left to do ends before its workers join: they must not fail the
    job (the head is gone, or `ray start` fails as it stops), since the done marker is there."""
    import subprocess

    from ltsweep.sweep.schema import Sweep

    prof = parse_profile({"partition": "d", "cpus_per_node": 1, "time_limit": 5})
    job = slurm.SweepJob(Sweep(name="t"), tmp_path, tmp_path / "cache", prof)
    marker = tmp_path / "driver-done.0"
    marker.touch()
    monkeypatch.setattr(sweep_job, "wait_reachable", lambda host, port, timeout_s: False)
    started: list[list[str]] = []
    monkeypatch.setattr(job, "_start_ray", started.append)
    job._run_worker(["ray", "start"], "head", 1234, marker)  # head gone: returns
    assert started == []

    def failing_start(argv: list[str]) -> None:
        raise subprocess.CalledProcessError(1, argv)

    monkeypatch.setattr(sweep_job, "wait_reachable", lambda host, port, timeout_s: True)
    monkeypatch.setattr(job, "_start_ray", failing_start)
    job._run_worker(["ray", "start"], "head", 1234, marker)  # ray start failed after the end
    marker.unlink()
    with pytest.raises(subprocess.CalledProcessError):  # ... but not before it
        job._run_worker(["ray", "start"], "head", 1234, marker)
