"""Atomic file writes: a reader (or a later run) sees the whole file or no file.

Write to a temporary name in the same folder, fsync, then rename over the target. A process
killed half-way leaves only a temporary file, which nothing reads and `cleanup_temp` removes.
A temporary file is named `.tmp-<target>.<random>.<pid>@<host>.ltsweep-tmp`: `cleanup_temp`
deletes only files of that form whose writer is gone (its pid is dead on this host, or, from
another host, it is a day old), never another process's file in progress or a user's file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    """The process's umask, read without changing it (os.umask() can only set it, and setting
    it to read it races with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # at import, before any thread of ours exists
    os.umask(old)
    return old


#: files are written with mode 0666 & ~UMASK, as `open()` would: collaborators on a shared
#: cluster filesystem read a run folder when the user's umask lets them
UMASK = _umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".tmp-{target.name}.", suffix=_temp_suffix(), dir=target.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; a plain open() would follow the umask
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


QUARANTINE = ".quarantine"


def move_aside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """Move a damaged `path` into `<root>/.quarantine/` under a new name (never delete what a
    user may want to look at); return where it went."""
    path = Path(path)
    target_dir = Path(root) / QUARANTINE
    target_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = target_dir / f"{path.name}.{stamp}.{os.getpid()}.{os.urandom(2).hex()}"
    os.replace(path, target)
    return target


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


_TEMP = re.compile(r"^\.tmp-.+\.(\d+)@(.+)\.ltsweep-tmp$")
#: a temporary file written on another host is left alone until it is this old
FOREIGN_TEMP_AGE_S = 24 * 3600


def _temp_suffix() -> str:
    return f".{os.getpid()}@{socket.gethostname()}.ltsweep-tmp"


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0
    return True


def _abandoned(path: Path) -> bool:
    m = _TEMP.match(path.name)
    if m is None:
        return False  # not a file ltsweep wrote
    pid, host = int(m.group(1)), m.group(2)
    if host == socket.gethostname():
        return not pid_alive(pid)
    try:
        return time.time() - path.stat().st_mtime > FOREIGN_TEMP_AGE_S
    except OSError:
        return False


def cleanup_temp(directory: str | os.PathLike[str]) -> int:
    """Remove the temporary files of killed ltsweep writers below `directory`; return how many.

    Only files named by `atomic_path` whose writer is gone: a file another process is still
    writing, or one ltsweep did not write, is left alone."""
    n = 0
    for p in Path(directory).rglob(".tmp-*"):
        if _abandoned(p):
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n
