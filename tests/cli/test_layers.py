"""The layer rules hold: `lint-imports` keeps pyproject.toml's import-linter contracts (the
layer order, and `train` knowing nothing of sweeps)."""

from __future__ import annotations

import shutil
import subprocess

from tests.helpers import REPO


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports")
    assert exe, "lint-imports is missing: pip install -e '.[test]' installs import-linter"
    out = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 2 kept, 0 broken." in out.stdout
