"""Stored files follow the user's umask (a shared cluster filesystem: collaborators read runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

WRITE = """
import sys
from pathlib import Path
from ltsweep.store.atomic import write_json
from ltsweep.store.atomic import atomic_path
out = Path(sys.argv[1])
write_json(out / "run.json", {"a": 1})
with atomic_path(out / "report" / "index.html") as tmp:
    tmp.write_text("<html></html>")
"""


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    def preexec() -> None:
        import os

        os.umask(umask)

    subprocess.run(
        [sys.executable, "-c", WRITE, str(tmp_path)], check=True, preexec_fn=preexec, timeout=120
    )
    for name in ("run.json", "report/index.html"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
