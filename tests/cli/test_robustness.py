"""One driver per run folder, nothing written before the input is checked, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ltsweep.cli import main
from ltsweep.store import lock as lockmod
from ltsweep.store.lock import LockHeld, RunLock, read_lock
from ltsweep.store.results import write_rows
from ltsweep.sweep.schema import load_sweep
from tests.helpers import TINY_SWEEP

# --- the lock -------------------------------------------------------------------------------


def _write_lock(run: Path, **fields) -> None:
    run.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    info |= {"heartbeat": time.time()} | fields
    (run / lockmod.LOCK).write_text(json.dumps(info))


def test_a_second_driver_is_refused_naming_the_holder(tmp_path):
    with RunLock(tmp_path / "run") as held:
        assert read_lock(tmp_path / "run")["pid"] == os.getpid()
        with pytest.raises(LockHeld) as err:
            RunLock(tmp_path / "run").acquire()
        message = str(err.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}" in message and "\n" not in message
        assert held.took_over is None
    assert read_lock(tmp_path / "run") is None  # released


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"pid": None}, "is gone"),  # this host, process dead (pid filled in below)
        ({"host": "elsewhere", "heartbeat": time.time() - 3600}, "no heartbeat"),
        ({"host": "elsewhere", "slurm_job_id": "424242"}, "no longer active"),
        ({"host": "node2", "slurm_job_id": "77", "slurm_restart": 0}, "requeued"),
    ],
)
def test_a_stale_lock_is_taken_over(tmp_path, monkeypatch, fields, reason):
    if fields.get("pid", 0) is None:
        fields = {**fields, "pid": _dead_pid()}
    monkeypatch.setattr(lockmod, "_slurm_active", lambda job: False if job == "424242" else True)
    if fields.get("slurm_job_id") == "77":
        monkeypatch.setenv("SLURM_JOB_ID", "77")
        monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    _write_lock(tmp_path / "run", **fields)
    with RunLock(tmp_path / "run") as held:
        assert held.took_over is not None and reason in held.took_over, held.took_over
        assert read_lock(tmp_path / "run")["pid"] == os.getpid()


def test_a_live_lock_elsewhere_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(lockmod, "_slurm_active", lambda job: True)
    _write_lock(tmp_path / "a", host="elsewhere")  # a fresh heartbeat from another host
    _write_lock(tmp_path / "b", host="node1", pid=1, slurm_job_id="12")  # an active job
    for run in ("a", "b"):
        with pytest.raises(LockHeld, match="another ltsweep driver"):
            RunLock(tmp_path / run).acquire()


@pytest.mark.slow
def test_two_drivers_on_one_folder(tmp_path):
    """The second `ltsweep run` is refused at once; SIGTERM stops the first cleanly."""
    argv = [sys.executable, "-m", "ltsweep.cli", "run", str(TINY_SWEEP), "--run-dir", "run"]
    first = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while read_lock(tmp_path / "run") is None:
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        t0 = time.monotonic()
        second = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and time.monotonic() - t0 < 30
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {first.pid}" in lines[0], lines
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=180)
        assert first.returncode in (0, 130), err
        assert "Traceback" not in err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert read_lock(tmp_path / "run") is None  # released on the way out


# --- nothing written before the input is checked ---------------------------------------------


def _existing_run(tmp_path: Path) -> Path:
    """A run folder of the tiny sweep as a run leaves it (without running anything)."""
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    (run / "logs").mkdir()
    sweep = load_sweep(TINY_SWEEP)
    (run / "sweep.yaml").write_text(yaml.safe_dump(sweep.model_dump(mode="json"), sort_keys=False))
    (run / "run.json").write_text(json.dumps({"sweep": "tiny", "cache_dir": str(tmp_path / "c")}))
    (run / "driver.json").write_text(json.dumps({"pid": 1, "running": False}))
    write_rows(run / "results", "kept", [])
    return run


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t.replace("noise: [0.0, 0.7]", "noise: [0.0, 1.7]"), "grid.noise[1]"),
        (lambda t: t.replace("seeds: [0, 1]", "seeds: [0, 1, 2]"), "grid.seeds differs"),
        (lambda t: t.replace("epochs: 4", "epochs: 5"), "ssl.simsiam.epochs differs"),
        (lambda t: t + "execution: {device: cpu}\n", "duplicate key 'execution'"),
    ],
)
def test_a_refused_sweep_leaves_the_run_folder_as_it_was(tmp_path, capsys, edit, expected):
    run = _existing_run(tmp_path)
    before = _snapshot(run)
    sweep = tmp_path / "other.yaml"
    sweep.write_text(edit(TINY_SWEEP.read_text()))
    assert main(["run", str(sweep), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert _snapshot(run) == before


def test_a_live_driver_holds_the_folder_before_anything_is_written(tmp_path, capsys):
    run = _existing_run(tmp_path)
    _write_lock(run)  # this process, alive
    before = _snapshot(run)
    assert main(["run", str(TINY_SWEEP), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "another ltsweep driver" in err and f"pid {os.getpid()}" in err
    assert _snapshot(run) == before


def test_an_unwritable_run_folder_is_refused(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    (tmp_path / "ro").mkdir(mode=0o555)
    assert main(["run", str(TINY_SWEEP), "--run-dir", str(tmp_path / "ro" / "run")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_a_file_as_run_folder_is_refused(tmp_path, capsys):
    (tmp_path / "run").write_text("a file")
    assert main(["run", str(TINY_SWEEP), "--run-dir", str(tmp_path / "run")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert (tmp_path / "run").read_text() == "a file"


def _label_file(tmp_path: Path, labels) -> Path:
    import numpy as np

    path = tmp_path / "labels.npz"
    np.savez(path, worse_label=np.asarray(labels), clean_label=np.zeros(len(labels), int))
    return path


@pytest.mark.parametrize(
    ("labels", "expected"),
    [([0, 1] * 25_000, None), ([0] * 100, "has 100 labels"), ([99] * 50_000, "has label 99")],
)
def test_cifar_n_labels_must_fit_the_data_set(tmp_path, capsys, labels, expected):
    from ltsweep.planning.preflight import LAYOUT

    root = tmp_path / "data"
    for rel in LAYOUT["cifar10"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    path = _label_file(tmp_path, labels)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        f"name: n\ndata: {{dataset: cifar10, root: {root}, noisy_labels: {{path: {path}, "
        "key: worse_label}}\ngrid: {noise_type: cifar-n, noise: [0.0]}\n"
    )
    code = main(["plan", str(sweep), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    if expected is None:
        assert code == 0, err
    else:
        assert code == 2 and expected in err and err.count("\n") == 1, err


def test_a_data_root_without_the_data_set_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: e\ndata: {{dataset: cifar100, root: {tmp_path / 'empty'}}}\n")
    assert main(["run", str(sweep), "--run-dir", str(tmp_path / "run")]) == 2
    assert "holds no cifar100 data set" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --- never a traceback --------------------------------------------------------------------------


def _broken(tmp_path: Path, how: str) -> Path:
    run = _existing_run(tmp_path)
    if how == "empty folder":
        for p in sorted(run.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
    elif how == "no run.json":
        (run / "run.json").unlink()
    elif how == "garbage run.json":
        (run / "run.json").write_text("[1, 2")
    elif how == "malformed sweep.yaml":
        (run / "sweep.yaml").write_text("name: [unclosed\n")
    elif how == "invalid sweep.yaml":
        (run / "sweep.yaml").write_text("name: t\ngrid: {noise: [3]}\n")
    elif how == "garbage slurm.json":
        (run / "slurm.json").write_bytes(b"\x00\xffnot json")
    elif how == "slurm.json without a job":
        (run / "slurm.json").write_text("{}")
    elif how == "garbage results":
        (run / "results" / "x.parquet").write_bytes(b"PAR1 not really")
    elif how == "sweep.yaml is a folder":
        (run / "sweep.yaml").unlink()
        (run / "sweep.yaml").mkdir()
    return run


BROKEN = [
    "empty folder",
    "no run.json",
    "garbage run.json",
    "malformed sweep.yaml",
    "invalid sweep.yaml",
    "garbage slurm.json",
    "slurm.json without a job",
    "garbage results",
    "sweep.yaml is a folder",
]


@pytest.mark.parametrize("how", BROKEN)
@pytest.mark.parametrize("command", ["status", "results", "report", "cancel"])
def test_no_traceback_on_a_broken_run_folder(tmp_path, capsys, monkeypatch, how, command):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # no squeue / scancel
    monkeypatch.delenv("LTSWEEP_DEBUG", raising=False)
    run = _broken(tmp_path, how)
    code = main([command, str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (0, 1, 2) and len(err) <= 1, err
    assert not any("Traceback" in line for line in err)
    if code:
        assert err and err[0].startswith("ltsweep: "), err


def test_an_unexpected_error_is_one_line_with_the_trace_in_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    code = """
import ltsweep.cli as cli
def boom(args):
    raise RuntimeError("something nobody foresaw")
cli.cmd_results = boom
parser = cli.build_parser
def build():
    p = parser()
    for action in p._subparsers._group_actions[0].choices.values():
        if action.prog.endswith("results"):
            action.set_defaults(func=boom)
    return p
cli.build_parser = build
raise SystemExit(cli.main(["results", "x"]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert "something nobody foresaw" in lines[0] and "LTSWEEP_DEBUG=1" in lines[0]
    traces = list((tmp_path / "xdg" / "ltsweep").glob("crash-*.txt"))
    assert len(traces) == 1 and "Traceback" in traces[0].read_text()
    debug = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LTSWEEP_DEBUG": "1"},
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr
