"""A local run's Ray never outlives its driver.

`ray.init()` on a machine without a cluster starts Ray's daemons (GCS, raylet, dashboard and
runtime-env agents, workers) beside the driver. When the driver is killed with `kill -9`,
some of them are adopted by init and live on. So a local run gives its Ray a temp dir of its
own, named after the driver (`/tmp/ltsweep-ray-local-<pid>-<start>`), and starts the same
reaper a SLURM task starts: a detached process that waits for the driver to end and then
stops exactly the processes that name that temp dir. A reaper that was itself killed leaves
the folder behind, and the next local run stops what its dead driver left.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import ray

from ltsweep.engine.ray_node import ray_temp_dir, stop_job_ray
from ltsweep.engine.reaper import process_start_time, spawn_reaper

#: the prefix of a local driver's id (a SLURM job's id is all digits)
LOCAL = "local-"
#: how the driver joins or starts Ray: quiet (its logs go to the run's driver.log), no dashboard
RAY_INIT = {
    "include_dashboard": False,
    "log_to_driver": False,
    "logging_level": logging.ERROR,
    "configure_logging": False,
}


def local_ray_id(pid: int | None = None) -> str:
    """`local-<pid>-<start time>`: names one driver process, even after its pid is reused."""
    pid = os.getpid() if pid is None else pid
    return f"{LOCAL}{pid}-{process_start_time(pid) or 0}"


def reap_dead_local_rays(tmp: Path = Path("/tmp")) -> int:
    """Stop the Ray processes that dead local drivers left, and remove their temp dirs.
    Returns how many processes were stopped."""
    stopped = 0
    prefix = Path(ray_temp_dir(LOCAL)).name
    for folder in tmp.glob(f"{prefix}*"):
        ray_id = folder.name[len(prefix) - len(LOCAL) :]
        pid_text, _, born = ray_id[len(LOCAL) :].partition("-")
        if not pid_text.isdigit() or local_ray_id(int(pid_text)) == ray_id:
            continue  # not ours, or its driver is alive
        stopped += stop_job_ray(ray_id)
        shutil.rmtree(folder, ignore_errors=True)
    return stopped


def start_local_ray(num_cpus: int, log_dir: Path) -> None:
    """`ray.init` of a local Ray tied to this process (see the module's docstring)."""
    reap_dead_local_rays()
    ray_id = local_ray_id()
    spawn_reaper(ray_id, 0, log_dir / "ray-reaper.log")
    ray.init(num_cpus=num_cpus, _temp_dir=ray_temp_dir(ray_id), **RAY_INIT)
