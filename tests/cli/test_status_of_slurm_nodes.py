"""`ltsweep status` of a SLURM run whose nodes are down: SLURM's reason for the wait, the job's
nodes that are down, and a finishing command that fits the nodes that are up. SLURM is faked
(squeue, sacct, scontrol, sinfo answer from a table); the real one is in
tests/integration/slurm/test_status_on_slurm.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltsweep.cli import main
from ltsweep.engine import slurm, slurm_nodes
from ltsweep.engine.slurm_nodes import NodesView, finish_command, usable
from ltsweep.status import status_text
from ltsweep.sweep.schema import load_sweep
from tests.helpers import NODES_PROFILE, TINY_SWEEP

DOWN_REASON = (
    "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions"
)
COMMAND = "ltsweep run tiny.yaml --cluster cluster/local-nodes.yaml --run-dir /runs/tiny"


def fake_slurm(monkeypatch, *, state: str, reason: str = "None", nodes: dict, restarts: int = 0):
    """SLURM answering as a cluster whose job 42 is in `state` and whose nodes are `nodes`."""

    def answer(argv: list[str]) -> str:
        if argv[0] == "squeue":
            return f"{state}|{reason}" if "%T|%r" in argv else state
        if argv[0] == "scontrol":
            return f"JobId=42 JobState={state} Restarts={restarts}"
        if argv[0] == "sinfo":
            return "\n".join(f"{n} {s}" for n, s in nodes.items())
        return ""

    monkeypatch.setattr(slurm_nodes, "slurm_output", answer)


def run_folder(tmp_path: Path, **fields) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    record = {
        "job_id": "42",
        "log_folder": str(run / "logs" / "slurm" / "42"),
        "profile": {"partition": "debug", "nodes": 3},
        "hostnames": ["node1", "node2", "node3"],
        "command": COMMAND,
    }
    record.update(fields)
    (run / "slurm.json").write_text(json.dumps(record))
    return run


def status(run: Path, tmp_path: Path) -> str:
    return status_text(run, load_sweep(TINY_SWEEP), tmp_path / "cache")


def test_a_job_pending_on_a_down_node_says_why_and_what_fits(monkeypatch, tmp_path):
    nodes = {"node1": "idle", "node2": "down*", "node3": "idle"}
    fake_slurm(monkeypatch, state="PENDING", reason=DOWN_REASON, nodes=nodes, restarts=1)
    run = run_folder(tmp_path)
    text = status(run, tmp_path)
    assert f"SLURM job 42: PENDING ({DOWN_REASON}; requeued 1 time(s))" in text
    assert "nodes down: node2 (of its nodes node1, node2, node3)" in text
    assert "2 of the 3 nodes it asks for are up in partition debug" in text
    assert f"`ltsweep cancel {run}`, then `{COMMAND} --nodes 2` finishes what is missing" in text


def test_a_cancelled_job_is_offered_the_nodes_that_are_up(monkeypatch, tmp_path):
    nodes = {"node1": "idle", "node2": "drained", "node3": "mixed"}
    fake_slurm(monkeypatch, state="CANCELLED", nodes=nodes)
    text = status(run_folder(tmp_path), tmp_path)
    assert "SLURM job 42: CANCELLED\n" in text and "nodes down: node2" in text
    assert f"the job ended CANCELLED: `{COMMAND} --nodes 2` finishes what is missing" in text


def test_with_every_node_up_the_same_command_is_offered(monkeypatch, tmp_path):
    fake_slurm(monkeypatch, state="FAILED", nodes={f"node{i}": "idle" for i in (1, 2, 3)})
    text = status(run_folder(tmp_path), tmp_path)
    assert "nodes down" not in text and "--nodes" not in text
    assert f"the job ended FAILED: `{COMMAND}` finishes what is missing" in text


def test_with_no_node_up_it_says_to_run_locally(monkeypatch, tmp_path):
    fake_slurm(monkeypatch, state="NODE_FAIL", nodes={f"node{i}": "down" for i in (1, 2, 3)})
    text = status(run_folder(tmp_path), tmp_path)
    assert "run it locally: `ltsweep run tiny.yaml --run-dir /runs/tiny`" in text


def test_a_job_waiting_for_resources_is_given_no_command(monkeypatch, tmp_path):
    fake_slurm(
        monkeypatch,
        state="PENDING",
        reason="Resources",
        nodes={"node1": "allocated", "node2": "idle"},
    )
    text = status(
        run_folder(tmp_path, profile={"partition": "debug", "nodes": 2}, hostnames=[]), tmp_path
    )
    assert "SLURM job 42: PENDING (Resources)" in text
    assert "nodes down" not in text and "finishes" not in text


def test_a_silent_slurm_changes_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(slurm_nodes, "slurm_output", lambda argv: "")
    text = status(run_folder(tmp_path), tmp_path)
    assert "SLURM job 42: unknown" in text and "nodes down" not in text


@pytest.mark.parametrize(
    ("state", "up"),
    [
        ("idle", True),
        ("mixed", True),
        ("allocated", True),
        ("completing", True),
        ("idle~", True),
        ("down", False),
        ("down*", False),
        ("idle*", False),
        ("drained", False),
        ("draining", False),
        ("fail", False),
        ("unknown*", False),
    ],
)
def test_which_sinfo_states_can_take_a_job(state, up):
    assert usable(state) is up


def test_an_earlier_nodes_option_is_replaced():
    view = NodesView("debug", ["node1", "node2"], ["node2"], up=1, known=True)
    record = {"profile": {"nodes": 2}, "command": f"{COMMAND} --nodes=2"}
    assert finish_command(record, "/runs/tiny", view) == (f"{COMMAND} --nodes 1", False)
    record["command"] = f"{COMMAND} --nodes 2 --wait"
    assert finish_command(record, "/runs/tiny", view) == (f"{COMMAND} --wait --nodes 1", False)


def test_run_nodes_overrides_the_profile(monkeypatch, tmp_path):
    seen = {}

    class Job:
        job_id = "7"

    def submit(sweep, run_dir, cache_dir, profile, **kw):
        seen.update(nodes=profile.nodes, command=kw["command"])
        return Job()

    monkeypatch.setattr(slurm, "submit_sweep", submit)
    run = tmp_path / "run"
    args = ["run", str(TINY_SWEEP), "--run-dir", str(run), "--cluster", str(NODES_PROFILE)]
    assert main([*args, "--nodes", "2"]) == 0
    assert seen["nodes"] == 2 and seen["command"].endswith("--nodes 2")


@pytest.mark.parametrize("extra", [["--nodes", "0"], ["--nodes", "2", "--no-cluster"]])
def test_run_nodes_must_be_a_count_with_a_cluster(tmp_path, capsys, extra):
    args = ["run", str(TINY_SWEEP), "--run-dir", str(tmp_path / "run")]
    if extra[-1] != "--no-cluster":
        args += ["--cluster", str(NODES_PROFILE)]
    assert main([*args, *extra[:2]]) == 2
    assert "--nodes" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_status_of_a_job_that_never_started(monkeypatch, tmp_path, capsys):
    """Before its first node starts, the run folder holds the job's record but no sweep."""
    nodes = {"node1": "idle", "node2": "idle", "node3": "drained"}
    fake_slurm(monkeypatch, state="PENDING", reason=DOWN_REASON, nodes=nodes)
    run = run_folder(tmp_path, hostnames=[])
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "no unit started yet" in out and f"PENDING ({DOWN_REASON})" in out
    assert "nodes down: node3\n" in out and f"{COMMAND} --nodes 2" in out
