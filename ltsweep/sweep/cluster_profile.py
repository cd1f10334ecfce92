"""A cluster profile: where and how big the SLURM allocation of a sweep is.

A profile is a small YAML file (cluster/slurm.yaml, cluster/local.yaml) validated here before
anything is submitted, so a typo fails on the login node with one line naming the file and
the field, not an hour later in a queue. Imports neither torch nor submitit: `ltsweep plan`
can read a profile in a blink.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from ltsweep.sweep.base import Strict, parse, read_yaml

#: ports one job's Ray uses on a node: fixed ports, then the worker port range
RAY_PORT_BLOCK = 256
#: sbatch options the profile sets through its own fields (or submitit owns); not in extra_sbatch
_MANAGED_SBATCH = {
    "partition": "partition",
    "p": "partition",
    "account": "account",
    "A": "account",
    "nodes": "nodes",
    "N": "nodes",
    "time": "time_limit",
    "t": "time_limit",
    "mem": "mem_gb or mem",
    "cpus-per-task": "cpus_per_node",
    "c": "cpus_per_node",
    "gres": "gpus_per_node",
    "gpus": "gpus_per_node",
    "gpus-per-node": "gpus_per_node",
    "gpus-per-task": "gpus_per_node",
    "G": "gpus_per_node",
    "constraint": "constraint",
    "C": "constraint",
    "qos": "qos",
    "q": "qos",
    "ntasks-per-node": "(one task per node, always)",
    "ntasks": "(one task per node, always)",
    "output": "(submitit writes logs under run_dir/logs/slurm)",
    "o": "(submitit writes logs under run_dir/logs/slurm)",
    "error": "(submitit writes logs under run_dir/logs/slurm)",
    "e": "(submitit writes logs under run_dir/logs/slurm)",
    "open-mode": "(always append, so a requeued job keeps its log)",
    "signal": "signal_delay_s",
    "no-kill": "no_kill",
    "k": "no_kill",
    "array": "worker_jobs (a sweep's worker jobs are one array)",
    "job-name": "(derived from the sweep name)",
    "J": "(derived from the sweep name)",
}
_SBATCH_OPTION = re.compile(r"^--([A-Za-z][A-Za-z0-9-]*)(?:=(.*))?$", re.DOTALL)
_TIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})$")


def _minutes(value: Any) -> Any:
    """Accept minutes (int) or SLURM's "[D-]HH:MM:SS"; return whole minutes, rounded up."""
    if isinstance(value, bool):
        raise ValueError("time_limit is minutes or 'HH:MM:SS', not a boolean")
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        m = _TIME.match(text)
        if not m:
            raise ValueError(f"{value!r} is not minutes or '[D-]HH:MM:SS'")
        days, hours, mins, secs = (int(g or 0) for g in m.groups())
        if mins >= 60 or secs >= 60:
            raise ValueError(f"{value!r}: minutes and seconds must be below 60")
        total = ((days * 24 + hours) * 60 + mins) * 60 + secs
        return -(-total // 60)
    return value


def _sbatch_option(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    m = _SBATCH_OPTION.match(value)
    if not m:
        raise ValueError(f"{value!r} is not of the form --key=value (or --flag)")
    key = m.group(1)
    if key in _MANAGED_SBATCH:
        raise ValueError(f"{value!r}: --{key} is set by the profile field {_MANAGED_SBATCH[key]}")
    return value


Minutes = Annotated[int, BeforeValidator(_minutes), Field(ge=1)]
SbatchOption = Annotated[str, BeforeValidator(_sbatch_option)]


class ClusterProfile(Strict):
    """The SLURM allocations of a sweep: its job of N nodes, one task (and one Ray node) each,
    whose first node runs the Ray head and the driver, and optional one-node worker jobs that
    join that Ray cluster while it runs."""

    partition: str = Field(min_length=1, description="SLURM partition (sbatch --partition)")
    account: str | None = Field(None, description="sbatch --account, if the site needs one")
    nodes: int = Field(1, ge=1, description="nodes of the allocation; one Ray node each")
    gpus_per_node: int = Field(0, ge=0, description="requested as --gres=gpu:N; Ray's --num-gpus")
    cpus_per_node: int = Field(
        ge=1, description="--cpus-per-task of the one task; Ray's --num-cpus"
    )
    mem_gb: float | None = Field(None, gt=0, description="memory per node in GB")
    mem: str | None = Field(
        None, pattern=r"^\d+[KMGT]?$", description="memory per node in sbatch syntax (64G; 0 = all)"
    )
    time_limit: Minutes = Field(description="minutes, or '[D-]HH:MM:SS'; stored as minutes")
    constraint: str | None = Field(None, description="sbatch --constraint (e.g. a GPU model)")
    qos: str | None = Field(None, description="sbatch --qos")
    extra_sbatch: list[SbatchOption] = Field(
        default_factory=list, description="further sbatch options, each '--key=value' or '--flag'"
    )
    setup: list[str] = Field(
        default_factory=list,
        description="shell lines run in the batch script before the job's python (module load, "
        "venv activation): the user's own commands, run as written by design",
    )
    max_requeues: int = Field(3, ge=0, description="requeues after preemption or time limit")
    no_kill: bool = Field(
        True,
        description="keep the job when one of its nodes fails (sbatch and srun --no-kill): the "
        "sweep goes on with the nodes left and retries the lost node's units there; the first "
        "node (Ray head and driver) stays the job's single point of failure. false: SLURM ends "
        "(and requeues) the whole job on any node failure",
    )
    worker_jobs: int = Field(
        0,
        ge=0,
        description="one-node worker jobs submitted with the sweep's job: each joins its Ray "
        "cluster, takes units, and leaves when there is no work, at its time limit, or when "
        "the head is gone (`ltsweep workers RUN --jobs N` adds more later)",
    )
    worker_time_limit: Minutes | None = Field(
        None,
        description="time limit of each worker job, minutes or '[D-]HH:MM:SS' (default: "
        "time_limit); short ones start sooner in a busy queue, and their units are retried",
    )
    worker_idle_s: int = Field(
        120,
        ge=10,
        description="a worker job leaves after this many seconds with no unit of its own while "
        "the driver has none waiting to start",
    )
    signal_delay_s: int = Field(
        120, ge=10, description="SIGUSR2 this long before the time limit: the time to stop cleanly"
    )
    ray_port_base: int | None = Field(
        None,
        ge=1024,
        le=65535 - RAY_PORT_BLOCK,
        description=f"first of {RAY_PORT_BLOCK} ports Ray uses on each node; default: derived "
        "from the job id, so two sweeps on one node do not collide",
    )
    python: str | None = Field(None, description="interpreter on the nodes; default: this one")

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        """Every value reaches the sbatch script: a newline there would be a line of its own."""
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                bad = next((c for c in text if ord(c) < 32 or ord(c) == 127), None)
                if bad is not None:
                    raise ValueError(
                        f"{text!r} holds the control character {bad!r}; values reach the sbatch "
                        "script, one line each"
                    )
        return value

    @model_validator(mode="after")
    def _one_memory(self) -> ClusterProfile:
        if self.mem_gb is not None and self.mem is not None:
            raise ValueError("mem: give mem_gb or mem, not both")
        return self

    def sbatch_mem(self) -> str | None:
        """Memory per node as sbatch writes it, or None to take the partition's default."""
        if self.mem is not None:
            return self.mem
        if self.mem_gb is None:
            return None
        if self.mem_gb == int(self.mem_gb):
            return f"{int(self.mem_gb)}G"
        return f"{int(self.mem_gb * 1024)}M"

    def sbatch_extra(self) -> dict[str, str | bool]:
        """extra_sbatch as submitit's additional_parameters: {"key": "value"}, flags as True."""
        out: dict[str, str | bool] = {}
        for option in self.extra_sbatch:
            m = _SBATCH_OPTION.match(option)
            assert m is not None  # validated
            out[m.group(1)] = True if m.group(2) is None else m.group(2)
        return out


def parse_profile(data: Any, source: str = "<profile>") -> ClusterProfile:
    return parse(ClusterProfile, data, source, "cluster profile")


def load_profile(path: str | os.PathLike[str]) -> ClusterProfile:
    """Read and validate a cluster profile; raise SpecError with a one-line message."""
    return parse_profile(read_yaml(path, "cluster profile"), str(path))
