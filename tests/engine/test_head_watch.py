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
def test_ranks_1_and_2_leave_a_watcher_under_no_kill(monkeypatch, tmp_path, no_kill):
    from ltsweep.engine import sweep_job
    from ltsweep.sweep.cluster_profile import parse_profile
    from ltsweep.sweep.schema import Sweep

    prof = parse_profile(
        {"partition": "d", "cpus_per_node": 1, "time_limit": 5, "no_kill": no_kill}
    )
    job = sweep_job.SweepJob(Sweep(name="t"), tmp_path, tmp_path / "cache", prof)
    spawned: list[tuple] = []
    monkeypatch.setattr(sweep_job, "spawn_head_watch", lambda *a: spawned.append(a))
    hosts = ["node1", "node2", "node3", "node4"]
    for rank in range(4):
        job._watch_head("42", hosts, rank)
    job._watch_head("43", ["node1"], 0)  # one node: no head to lose
    assert [(a[0], a[1], a[3]) for a in spawned] == (
        [("42", "node1", 900.0)] * 2 if no_kill else []
    )
    if no_kill:
        assert [a[2].name for a in spawned] == ["head-watch.1.log", "head-watch.2.log"]


def test_a_silent_squeue_is_not_the_end(monkeypatch):
    requeued = fake(monkeypatch, [("", "")] * 2 + [("RUNNING", "node[2-3]")])
    assert watch(limit_s=5)[0] is True and requeued == ["42"]  # two misses: still watching
    requeued = fake(monkeypatch, [("", "")] * 3 + [("RUNNING", "node[2-3]")])
    assert watch(limit_s=5)[0] is False and requeued == []  # three: SLURM forgot the job
