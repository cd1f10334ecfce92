"""A `no_kill` job whose first node (Ray head, driver and batch script) failed: SLURM keeps it
running, headless, on the nodes left; the watcher a leaving worker starts requeues it once
SLURM drops that node from the job, and does nothing for a head that is only unreachable.
SLURM is faked (squeue and scontrol answer from a script)."""

from __future__ import annotations

import pytest

from ltsweep.engine import slurm_nodes
from ltsweep.engine.slurm_nodes import watch_head


def fake(monkeypatch, answers: list[tuple[str, str]]) -> list[str]:
    """squeue answers `(state, nodes)` in turn (the last one repeats); returns the requeues."""
    turn = iter(answers)
    now = {"state": answers[0]}
    requeued: list[str] = []

    def output(argv: list[str]) -> str:
        if argv[0] == "squeue":
            now["state"] = next(turn, now["state"])
            state, nodes = now["state"]
            return f"{state} {nodes}".strip()
        if argv[:3] == ["scontrol", "show", "hostnames"]:
            return {"node[1-3]": "node1\nnode2\nnode3", "node[2-3]": "node2\nnode3"}[argv[3]]
        return ""

    monkeypatch.setattr(slurm_nodes, "slurm_output", output)
    monkeypatch.setattr(slurm_nodes, "requeue", lambda job_id: requeued.append(job_id))
    return requeued


def watch(**kw) -> tuple[bool, list[str]]:
    lines: list[str] = []
    return watch_head("42", "node1", lines.append, poll_s=0.001, **kw), lines


def test_the_head_node_dropped_from_the_job_requeues_it(monkeypatch):
    requeued = fake(monkeypatch, [("RUNNING", "node[1-3]")] * 3 + [("RUNNING", "node[2-3]")])
    done, lines = watch(limit_s=5)
    assert done and requeued == ["42"]
    assert "node1" in lines[0] and "requeueing" in lines[0]


def test_a_job_that_stops_running_is_left_alone(monkeypatch):
    requeued = fake(monkeypatch, [("RUNNING", "node[1-3]"), ("COMPLETING", "node[1-3]")])
    assert watch(limit_s=5)[0] is False and requeued == []
    requeued = fake(monkeypatch, [("", "")])  # SLURM forgot it
    assert watch(limit_s=5)[0] is False and requeued == []


def test_a_head_only_unreachable_is_not_requeued(monkeypatch):
    requeued = fake(monkeypatch, [("RUNNING", "node[1-3]")])
    assert watch(limit_s=0.05)[0] is False and requeued == []


@pytest.mark.parametrize("no_kill", [True, False])
def test_a_leaving_worker_starts_the_watch_only_under_no_kill(monkeypatch, tmp_path, no_kill):
    from ltsweep.engine import sweep_job
    from ltsweep.sweep.cluster_profile import parse_profile
    from ltsweep.sweep.schema import Sweep

    prof = parse_profile(
        {"partition": "d", "cpus_per_node": 1, "time_limit": 5, "no_kill": no_kill}
    )
    job = sweep_job.SweepJob(Sweep(name="t"), tmp_path, tmp_path / "cache", prof)
    job._job_id = "42"
    spawned: list[tuple] = []
    monkeypatch.setattr(sweep_job, "spawn_head_watch", lambda *a: spawned.append(a))
    monkeypatch.setattr(
        sweep_job.submitit,
        "JobEnvironment",
        lambda: type("Env", (), {"hostnames": ["node1", "node2"]})(),
    )
    job._watch_head()
    assert [a[:2] for a in spawned] == ([("42", "node1")] if no_kill else [])
