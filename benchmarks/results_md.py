"""What every benchmark script shares: timing a call, and writing its section of RESULTS.md.

Each script owns one section of benchmarks/RESULTS.md, delimited by HTML comments
(`<!-- name:start -->` ... `<!-- name:end -->`), and rewrites only that section, so scripts
run at different times keep each other's figures. Run as `python benchmarks/<script>.py`,
this folder is on sys.path and the scripts import it by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ltsweep.store.atomic import atomic_path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def update_section(section: str, body: str, path: Path = RESULTS) -> None:
    """Replace `section` of the results file (or append it), keep the rest; atomically."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def publish(section: str, body: str, write: bool) -> None:
    """Print a script's results and, unless told not to, store them as its section."""
    print("\n" + body)
    if write:
        update_section(section, body)
        print(f"\nwrote {RESULTS}")
