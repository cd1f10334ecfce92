"""Ray on a SLURM node is told the GPUs the node really has (nvidia-smi cut by
CUDA_VISIBLE_DEVICES), and a node without the GPUs its profile asks for fails at once."""

from __future__ import annotations

import socket

import pytest

from ltsweep import gpu_probe
from ltsweep.engine import ray_node
from ltsweep.gpu_probe import GpuInfo
from ltsweep.sweep.cluster_profile import parse_profile

HOSTS = ["node1", "node2"]
GPU = GpuInfo("NVIDIA A100-SXM4-80GB", (8, 0), 81920, "580.65.06")


def profile(gpus: int):
    data = {"partition": "p", "nodes": 2, "gpus_per_node": gpus, "cpus_per_node": 8}
    data["time_limit"] = "1:00:00"
    return parse_profile(data, "test.yaml")


@pytest.mark.parametrize(
    ("listed", "cuda_visible", "want"),
    [
        (4, None, 4),
        (4, "", 0),
        (4, "0,1", 2),
        (4, "2", 1),
        (2, "0,5,1", 1),  # CUDA stops at the first index past the last GPU
        (4, "0,0", 1),  # and at a repeat
        (4, "-1", 0),
        (4, "GPU-8a1b,GPU-77ce", 2),
        (1, "GPU-8a1b,GPU-77ce", 1),
        (0, "0", 0),
    ],
)
def test_visible_gpu_count(listed, cuda_visible, want):
    assert ray_node.visible_gpu_count(listed, cuda_visible) == want


def test_num_gpus_is_what_the_node_sees(monkeypatch):
    monkeypatch.setattr(gpu_probe, "visible_gpus", lambda: (GPU,) * 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert ray_node.node_gpus(profile(4)) == 2  # SLURM gave this job two of the four
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert ray_node.node_gpus(profile(2)) == 2  # never more than the profile asked for
    assert ray_node.node_gpus(profile(0)) == 0  # a CPU profile keeps Ray off the GPUs
    argv = ray_node.render_node_bootstrap(profile(4), "123", HOSTS, 1, gpus=2)
    assert "--num-gpus=2" in argv
    assert "--num-gpus=4" in ray_node.render_node_bootstrap(profile(4), "123", HOSTS, 1)


@pytest.mark.parametrize(
    ("listed", "which", "cuda_visible", "seen"),
    [
        ((), None, None, "no nvidia-smi, CUDA_VISIBLE_DEVICES=unset"),
        ((), "/usr/bin/nvidia-smi", None, "nvidia-smi lists none, CUDA_VISIBLE_DEVICES=unset"),
        (
            (GPU,),
            "/usr/bin/nvidia-smi",
            "",
            "nvidia-smi lists 1 (driver 580.65.06), CUDA_VISIBLE_DEVICES=''",
        ),
    ],
)
def test_a_gpu_profile_on_a_node_without_gpus_fails_with_one_line(
    monkeypatch, listed, which, cuda_visible, seen
):
    monkeypatch.setattr(gpu_probe, "visible_gpus", lambda: listed)
    monkeypatch.setattr(ray_node.shutil, "which", lambda name: which)
    monkeypatch.setattr(socket, "gethostname", lambda: "node2")
    if cuda_visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cuda_visible)
    with pytest.raises(ray_node.NodeWithoutGpus) as err:
        ray_node.node_gpus(profile(1))
    line = str(err.value)
    assert line.startswith("node2: the cluster profile asks for gpus_per_node 1 but this node ")
    assert f"sees no GPU ({seen});" in line and "\n" not in line
