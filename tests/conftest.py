"""Shared pytest fixtures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# The repository is checked out next to shared/ (locally and in CI).
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real CIFAR-10 in its standard layout, built once per session (about 10-20 s)."""
    script = SHARED / "data" / "cifar10" / "build_layout.py"
    if not script.is_file():
        pytest.skip(f"real CIFAR-10 not available: {script} is absent")
    root = tmp_path_factory.mktemp("cifar10_real")
    subprocess.run([sys.executable, str(script), str(root)], check=True, capture_output=True)
    return root
