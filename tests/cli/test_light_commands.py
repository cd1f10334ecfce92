"""`ltsweep plan`, `status` and `results` import neither torch nor ray; `import ltsweep` imports
nothing heavy. Each command runs in a fresh interpreter, which then lists what it imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ltsweep.planning.plan import make_plan
from ltsweep.store.results import write_rows
from ltsweep.sweep.schema import load_sweep
from tests.helpers import TEST_DATA

TINY = TEST_DATA / "tiny.yaml"
HEAVY = ("torch", "torchvision", "ray", "submitit", "matplotlib")


def imported_after(code: str) -> dict[str, object]:
    """Run `code` in a fresh interpreter; return its `result` and the heavy packages it loaded."""
    probe = (
        f"{code}\nimport json, sys\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads(sys.argv[1])))\n"
        "print(json.dumps({'result': result, 'heavy': heavy}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A run folder as `ltsweep run` leaves it: the frozen sweep, run.json, one result row."""
    sweep = load_sweep(TINY)
    run = tmp_path / "runs" / "tiny"
    (run / "results").mkdir(parents=True)
    (run / "sweep.yaml").write_text(yaml.safe_dump(sweep.model_dump(mode="json")))
    (run / "run.json").write_text(json.dumps({"cache_dir": str(tmp_path / "cache")}))
    unit = make_plan(sweep).finetunes[0]
    write_rows(run / "results", "one", [unit.row(sweep.name, {"acc": 0.5}, seconds=1.0)])
    return run


@pytest.mark.parametrize("command", ["plan", "status", "results"])
def test_command_imports_neither_torch_nor_ray(command, run_dir):
    args = {
        "plan": ["plan", str(TINY), "--run-dir", str(run_dir)],
        "status": ["status", str(run_dir)],
        "results": ["results", str(run_dir)],
    }[command]
    got = imported_after(f"from ltsweep.cli import main\nresult = main({args!r})")
    assert got["result"] == 0
    assert got["heavy"] == []


def test_import_ltsweep_is_light():
    got = imported_after("import ltsweep\nresult = ltsweep.__version__")
    assert got["heavy"] == []
