"""What SLURM says of a job's wait and of its nodes, for `ltsweep status`: why a job pends
(SLURM's reason), which of its nodes are down, and how many of its partition's nodes are up,
so that the command status offers to finish a sweep fits the nodes there are.

Also the watcher a `no_kill` job leaves on two worker nodes, which requeues the job when
its first node is lost (`watch_head`).

Imports no submitit: squeue, sinfo and scontrol are asked, each an argv list (no shell),
through `slurm_output`, which tests replace.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: sinfo's node states (%T, lower case, flags stripped) in which a node takes no new job
UNUSABLE_STATES = frozenset(
    "down drained draining drain fail failing future unknown inval maint powered_down "
    "powering_down power_down powering_up reboot_issued reboot_requested".split()
)
#: sinfo's flag suffixes: `*` (not responding) makes a node unusable; the others do not
_FLAGS = "*~#!%$@^-+"


def slurm_output(argv: list[str]) -> str:
    """stdout of a SLURM command, or "" if it cannot run or fails (status must not crash)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


#: SLURM states in which a job still holds or waits for nodes
ACTIVE_STATES = frozenset(
    "PENDING RUNNING REQUEUED REQUEUE_HOLD REQUEUE_FED CONFIGURING COMPLETING RESIZING "
    "SUSPENDED STAGE_OUT SIGNALING".split()
)


def job_state_now(job_id: str) -> str | None:
    """SLURM's state of a job (PENDING, RUNNING, COMPLETED, ...), or None if SLURM does not
    know it or does not answer.

    Asks squeue first: it is the controller's live view, while sacct learns of a state change
    only when slurmctld has sent it to slurmdbd (seen here: sacct still said PENDING while the
    job's driver was already running). A job that has left the queue is asked of sacct.
    """
    jid = str(job_id)
    lines = slurm_output(["squeue", "-h", "-j", jid, "-o", "%T"]).splitlines()
    if not lines:
        lines = slurm_output(["sacct", "-j", jid, "-n", "-X", "-P", "-o", "State"]).splitlines()
    states = [line.split()[0] for line in lines if line.strip()]
    return states[-1] if states else None


def pending_reason(job_id: str) -> str | None:
    """SLURM's reason a pending job waits ("Resources", "Nodes required for job are DOWN,
    DRAINED or ..."), or None for a job that is not pending or has no reason."""
    line = slurm_output(["squeue", "-h", "-j", str(job_id), "-o", "%T|%r"])
    state, _, reason = line.splitlines()[-1].partition("|") if line else ("", "", "")
    reason = reason.strip()
    if state.strip() != "PENDING" or reason in ("", "None", "(null)"):
        return None
    return reason


def node_states(partition: str | None = None) -> dict[str, str]:
    """{node: sinfo's state} of the partition's nodes (all nodes without one); {} when SLURM
    does not answer."""
    argv = ["sinfo", "-N", "-h", "-o", "%N %T"] + (["-p", partition] if partition else [])
    states: dict[str, str] = {}
    for line in slurm_output(argv).splitlines():
        name, _, state = line.strip().partition(" ")
        if name:
            states[name] = state.strip().lower()
    return states


def usable(state: str) -> bool:
    """A node in this sinfo state can start a new job (idle, mixed, allocated, completing)."""
    return not state.endswith("*") and state.rstrip(_FLAGS) not in UNUSABLE_STATES


@dataclass
class NodesView:
    """The job's nodes and its partition's, as status shows them."""

    partition: str | None
    job_nodes: list[str] = field(default_factory=list)  # the nodes its last run had
    down: list[str] = field(default_factory=list)  # of job_nodes, those that are unusable now
    up: int = 0  # usable nodes of the partition
    known: bool = False  # sinfo answered


def nodes_view(record: dict) -> NodesView:
    """Which of the recorded job's nodes are down now, and how many of its partition are up."""
    partition = (record.get("profile") or {}).get("partition")
    view = NodesView(partition, job_nodes=[str(n) for n in record.get("hostnames") or []])
    states = node_states(partition)
    if not states:
        return view
    view.known = True
    view.up = sum(usable(s) for s in states.values())
    everywhere = states if all(n in states for n in view.job_nodes) else node_states()
    view.down = [n for n in view.job_nodes if n in everywhere and not usable(everywhere[n])]
    if not view.job_nodes:  # never started: any unusable node of its partition may be the one
        view.down = sorted(n for n, s in states.items() if not usable(s))
    return view


def _without(argv: list[str], option: str) -> list[str]:
    """argv without `option VALUE` and `option=VALUE`."""
    out: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == option:
            skip = True
        elif not word.startswith(option + "="):
            out.append(word)
    return out


def finish_command(record: dict, run_dir: str | Path, view: NodesView) -> tuple[str, bool]:
    """The command that finishes what is missing, fitted to the nodes that are up, and
    whether it runs locally: the job's own command; with `--nodes N` when fewer than its
    profile's nodes are up; without `--cluster` (a local run) when none is."""
    recorded = record.get("command")
    argv = shlex.split(recorded) if recorded else []
    if not argv:
        sweep = record.get("sweep_path") or "SWEEP"
        argv = ["ltsweep", "run", str(sweep), "--cluster", "PROFILE", "--run-dir", str(run_dir)]
    wanted = int((record.get("profile") or {}).get("nodes") or 0)
    if not view.known or not wanted or view.up >= wanted:
        return recorded or shlex.join(argv), False
    argv = _without(argv, "--nodes")
    if view.up >= 1:
        return shlex.join([*argv, "--nodes", str(view.up)]), False
    return shlex.join(_without(argv, "--cluster")), True


# --- a lost head under --no-kill: requeue, as SLURM does without it ------------------------------

#: how long `watch_head` watches by default (a job's watcher: its time limit and a margin)
HEAD_VERDICT_S = 900.0
_WATCH_POLL_S = 15.0  # one squeue per watcher (two per job) and poll


def job_nodes_now(job_id: str) -> tuple[str, list[str]]:
    """(state, nodes) of the job as SLURM holds it now; a node lost under --no-kill has been
    dropped from its nodes. ("", []) once SLURM does not know the job."""
    line = slurm_output(["squeue", "-h", "-j", str(job_id), "-o", "%T %N"])
    state, _, nodelist = line.splitlines()[-1].partition(" ") if line else ("", "", "")
    nodes = slurm_output(["scontrol", "show", "hostnames", nodelist.strip()]) if nodelist else ""
    return state.strip(), nodes.split()


def watch_head(
    job_id: str,
    head: str,
    log: Callable[[str], None],
    limit_s: float = HEAD_VERDICT_S,
    poll_s: float = _WATCH_POLL_S,
) -> bool:
    """While the job runs: once SLURM drops the head's node from it (the node failed),
    requeue the job and return True. Without this, a --no-kill job whose first node failed
    would run on, headless, until its time limit: that node runs the batch script, whose end
    ends the job. False when the job stops running (done, requeued, cancelled) or `limit_s`
    passes; a head only unreachable (a network fault) stays in the job and is left alone."""
    deadline = time.monotonic() + limit_s
    unanswered = 0
    while time.monotonic() < deadline:
        state, nodes = job_nodes_now(job_id)
        unanswered = 0 if state else unanswered + 1
        if (state and state != "RUNNING") or unanswered >= 3:  # one silent squeue: a hiccup
            return False
        if nodes and head not in nodes:
            log(f"SLURM dropped the head's node {head} from job {job_id} (it failed): requeueing")
            failed = requeue(job_id)
            if failed:
                log(f"scontrol requeue {job_id} failed: {failed}")
            return not failed
        time.sleep(poll_s)
    return False


def requeue(job_id: str) -> str | None:
    """`scontrol requeue` the job; None if done, else why not."""
    try:
        subprocess.run(
            ["scontrol", "requeue", str(job_id)], capture_output=True, timeout=60, check=True
        )
    except subprocess.CalledProcessError as err:
        return (err.stderr or b"").decode(errors="replace").strip() or f"exit {err.returncode}"
    except (OSError, subprocess.SubprocessError) as err:
        return str(err)
    return None


def spawn_head_watch(job_id: str, head: str, log_path: Path, limit_s: float) -> None:
    """Start `watch_head` detached from the calling task, for at most `limit_s`; returns at
    once."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        subprocess.run(
            [
                *(sys.executable, "-m", "ltsweep.engine.slurm_nodes", "watch-head"),
                *(job_id, head, f"{limit_s:.0f}"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            check=True,
            timeout=60,
        )


def _log(msg: str) -> None:
    print(f"[ltsweep.head-watch {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "watch-head" or not argv[3].isdigit():
        print("usage: python -m ltsweep.engine.slurm_nodes watch-head JOB_ID HEAD_NODE LIMIT_S")
        return 2
    if os.fork() > 0:  # the parent returns at once; the child is adopted by init
        return 0
    os.setsid()
    watch_head(argv[1], argv[2], _log, limit_s=float(argv[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
