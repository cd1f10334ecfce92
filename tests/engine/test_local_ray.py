"""A local run's Ray is tied to its driver: what a dead driver left is stopped."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from ltsweep.engine import local_ray
from ltsweep.engine.ray_node import ray_temp_dir


def _sleeper(temp_dir: str) -> subprocess.Popen:
    """A process that names `temp_dir` on its command line, as Ray's daemons do."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", f"--temp-dir={temp_dir}"],
        start_new_session=True,
    )


def test_local_ray_id_names_one_process():
    ray_id = local_ray.local_ray_id()
    assert ray_id.startswith("local-") and ray_id == local_ray.local_ray_id()
    pid, born = ray_id[len("local-") :].split("-")
    assert int(pid) > 0 and int(born) > 0
    assert len(ray_temp_dir(ray_id)) < 60  # Ray's socket paths stay short


def test_the_ray_of_a_dead_driver_is_stopped_and_its_folder_removed():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_id = local_ray.local_ray_id(dead.pid)  # read while it lives
    dead.wait()
    dead_dir = Path(ray_temp_dir(dead_id))
    alive_dir = Path(ray_temp_dir(local_ray.local_ray_id()))  # this process: a live driver
    dead_dir.mkdir(parents=True, exist_ok=True)
    alive_dir.mkdir(parents=True, exist_ok=True)
    left, kept = _sleeper(f"{dead_dir}/session_1"), _sleeper(f"{alive_dir}/session_1")
    try:
        time.sleep(0.3)
        assert local_ray.reap_dead_local_rays() == 1
        assert left.wait(timeout=10) is not None
        assert kept.poll() is None
        assert not dead_dir.exists() and alive_dir.exists()
    finally:
        for proc in (left, kept):
            proc.kill()
            proc.wait()
        alive_dir.rmdir()
