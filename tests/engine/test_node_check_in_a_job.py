"""A job's node check as the submit side reads it back: the node whose check failed is named,
never a node whose check was only stopped because the job was already ending (srun
--kill-on-bad-exit stops every task once one fails)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ltsweep.engine import node_check
from ltsweep.engine.node_check import NodeCheckFailed, check_this_node, failed_node


def _check_ending(monkeypatch, returncode: int, stdout: str = "") -> str:
    def run(argv, **kw):
        return subprocess.CompletedProcess(argv, returncode, stdout=stdout, stderr="")

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(NodeCheckFailed) as err:
        check_this_node(Path("/r"), Path("/c"), lambda line: None)
    return str(err.value)


def test_a_check_stopped_by_a_signal_is_not_a_failure_of_its_node(monkeypatch):
    said = _check_ending(monkeypatch, -15)
    assert said.endswith("stopped by signal 15: the job is ending")
    assert "failed" not in said


def test_a_failing_check_names_its_line(monkeypatch):
    line = f"{'cache':<{node_check._NAME_W}}{node_check.FAIL} not the shared folder"
    said = _check_ending(monkeypatch, 1, stdout=f"{line}\n")
    assert said.startswith("node check failed on ") and said.endswith(line)


def test_the_failed_node_is_found_among_stopped_ones(tmp_path):
    prefix = f"{NodeCheckFailed.__module__}.NodeCheckFailed: "
    (tmp_path / "9_0_log.err").write_text(
        f"{prefix}node check on node1 stopped by signal 15: the job is ending\n"
    )
    (tmp_path / "9_1_log.err").write_text(
        f"Traceback ...\n{prefix}node check failed on node2: cache  FAIL not the shared folder\n"
    )
    assert failed_node(tmp_path) == "node check failed on node2: cache  FAIL not the shared folder"
    (tmp_path / "9_1_log.err").unlink()
    assert failed_node(tmp_path) is None
