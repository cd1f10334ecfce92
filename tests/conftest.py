"""Shared pytest fixtures."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LOCAL_PROFILE, SHARED, SHARED_TMP, TINY_SWEEP, ltsweep_cmd


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    if call.when == "call":
        item.ltsweep_failed = outcome.get_result().failed  # type: ignore[attr-defined]


@pytest.fixture
def tmp_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """pytest's tmp_path; for a SLURM test, a fresh folder under SHARED_TMP that every test
    node sees, removed after the test unless it failed (its logs are then kept)."""
    name = re.sub(r"\W", "_", request.node.name)  # as pytest's own: no [ ] / in folder names
    if request.node.get_closest_marker("slurm") is None:
        return tmp_path_factory.mktemp(name[:30], numbered=True)
    SHARED_TMP.mkdir(parents=True, exist_ok=True)
    path = SHARED_TMP / f"{name[:40]}-{os.getpid()}-{os.urandom(3).hex()}"
    path.mkdir()

    def remove_unless_failed() -> None:
        if not getattr(request.node, "ltsweep_failed", False):
            shutil.rmtree(path, ignore_errors=True)

    request.addfinalizer(remove_unless_failed)
    return path


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real CIFAR-10 in its standard layout, built once per session (about 10-20 s)."""
    script = SHARED / "data" / "cifar10" / "build_layout.py"
    if not script.is_file():
        pytest.skip(f"real CIFAR-10 not available: {script} is absent")
    root = tmp_path_factory.mktemp("cifar10_real")
    subprocess.run([sys.executable, str(script), str(root)], check=True, capture_output=True)
    return root


@pytest.fixture(scope="session")
def tiny_local_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess]:
    """One uninterrupted local run of tests/data/tiny.yaml: (run folder, the command's result).

    The end-to-end and SLURM tests compare their tables to this one.
    """
    base = tmp_path_factory.mktemp("uninterrupted")
    done = ltsweep_cmd("run", str(TINY_SWEEP), "--run-dir", str(base / "run"), cwd=base)
    assert done.returncode == 0, done.stderr
    return base / "run", done


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The partition of the running test cluster; skips when there is none."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed (no sinfo/sbatch on PATH): bash cluster/start-slurm.sh")
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"the SLURM controller does not answer ({err}): bash cluster/start-slurm.sh")
    if "UP" not in ping.stdout:
        said = (ping.stdout.strip().splitlines() or [ping.stderr.strip()])[0]
        pytest.skip(f"the SLURM controller does not answer ({said}): bash cluster/start-slurm.sh")
    from ltsweep.sweep.cluster_profile import load_profile

    partition = load_profile(LOCAL_PROFILE).partition
    state = subprocess.run(
        ["sinfo", "-h", "-p", partition, "-o", "%T"], capture_output=True, text=True, timeout=30
    ).stdout.split()
    if not set(state) & {"idle", "mixed", "allocated", "completing"}:
        pytest.skip(f"partition {partition!r} has no usable node (sinfo: {state})")
    return partition


@pytest.fixture(scope="session")
def nodes(slurm_cluster: str) -> list[str]:
    """node1..node3 of the namespaced 3-node test cluster (each a network namespace
    `ltsw-<node>`); skips without them."""
    names = subprocess.run(
        ["sinfo", "-h", "-N", "-p", slurm_cluster, "-o", "%N"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found = sorted({n for n in names if f"ltsw-{n}" in spaces})
    if len(found) < 3:
        pytest.skip(
            f"no 3-node test cluster (nodes {names}): bash cluster/start-slurm.sh --nodes 3"
        )
    return found


def _torch_on_one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test, as a 1-CPU worker runs (exact results across runs)."""
    yield from _torch_on_one_thread()


@pytest.fixture(scope="module")
def one_thread_module():
    """The same for a whole module, module-scoped fixtures included (a reference run made
    once per module would otherwise run on every thread, which crawls on a shared machine)."""
    yield from _torch_on_one_thread()


@pytest.fixture(scope="module")
def digits():
    """The embedded digits data set at 16 px, 40 test images per class (baseline tests)."""
    from ltsweep.data.digits import load_digits_dataset

    return load_digits_dataset(image_size=16, test_per_class=40)


@pytest.fixture(autouse=True)
def keep_cuda_visible_devices() -> Iterator[None]:
    """A CPU unit run inside the test process hides the GPUs from it (CUDA_VISIBLE_DEVICES=""),
    as it does in its worker; the next test (a `pytest -m gpu` one) gets them back."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    yield
    if before is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = before


#: what a SLURM job's code sets for its own Ray; left in the test process, every later local
#: run would look for a token file that no longer exists
RAY_AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture(autouse=True)
def no_ray_auth_left() -> Iterator[None]:
    """Fail the test that leaves Ray's token settings behind, not the innocent one after it."""
    before = {name: os.environ.get(name) for name in RAY_AUTH_VARIABLES}
    yield
    after = {name: os.environ.get(name) for name in RAY_AUTH_VARIABLES}
    for name, value in before.items():  # restore, so one leak fails one test
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    assert after == before, f"the test left Ray's token settings changed: {after}"


@pytest.fixture
def cuda_backend_flags() -> Iterator[list]:
    """torch's TF32 and cuDNN switches, as they were, after the test (a CUDA unit sets them in
    this very process). Saved and set back by value: they live behind the backend modules'
    __getattr__, which monkeypatch's undo cannot restore on every pytest version."""
    import torch

    flags = [
        (torch.backends.cuda.matmul, "allow_tf32"),
        (torch.backends.cudnn, "allow_tf32"),
        (torch.backends.cudnn, "benchmark"),
    ]
    saved = [getattr(module, name) for module, name in flags]
    yield flags
    for (module, name), value in zip(flags, saved, strict=True):
        setattr(module, name, value)
