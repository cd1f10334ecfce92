"""A unit done in any run sharing the cache is not computed again: its row is reused."""

from __future__ import annotations

import yaml

import ltsweep
from tests.helpers import TINY_SWEEP, ltsweep_cmd


def test_a_second_sweep_reuses_the_rows_it_shares(tmp_path) -> None:
    spec = yaml.safe_load(TINY_SWEEP.read_text())
    spec["grid"]["gamma"] = [10]
    spec["baselines"] = {"methods": ["ce"], "epochs": 1}
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump(spec))
    spec |= {"name": "tiny-more"}
    spec["grid"]["noise"] = [0.0, 0.7, 0.3, 0.5]  # two more noise levels
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump(spec))
    cache = tmp_path / "cache"

    def run(sweep, name):
        out = ltsweep_cmd("run", str(sweep), "--run-dir", str(tmp_path / name),
                          "--cache-dir", str(cache), "--quiet", cwd=tmp_path)  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out

    run(first, "a")
    a = ltsweep.load_results(tmp_path / "a").set_index("unit_key")
    assert len(a) == 8 + 4  # 8 fine-tunes (2 noise x 2 losses x 2 seeds), 4 CE baselines
    plan = ltsweep_cmd("plan", str(second), "--run-dir", str(tmp_path / "b"),
                       "--cache-dir", str(cache), cwd=tmp_path)  # fmt: skip
    assert "fine-tune trials:    16  (0 stored, 8 from the cache, 8 to run" in plan.stdout
    assert "baseline runs  :      8  (0 stored, 4 from the cache, 4 to run)" in plan.stdout
    out = run(second, "b")
    assert "reusing 12 results" in out.stderr
    b = ltsweep.load_results(tmp_path / "b").set_index("unit_key")
    assert len(b) == 24
    shared = b.loc[a.index]
    assert (shared["sweep"] == "tiny").all()  # where they came from
    assert (b.drop(a.index)["sweep"] == "tiny-more").all()
    for column in ("acc", "seconds", "started", "host"):  # the real compute, not a re-run's
        assert shared[column].equals(a[column]), column
    again = ltsweep_cmd("plan", str(second), "--run-dir", str(tmp_path / "b"),
                        "--cache-dir", str(cache), cwd=tmp_path)  # fmt: skip
    assert "fine-tune trials:    16  (16 stored, 0 to run" in again.stdout
