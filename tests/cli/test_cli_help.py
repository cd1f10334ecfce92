"""What the command says about itself: --version, help for every argument, a mistyped key."""

from __future__ import annotations

import pytest

import ltsweep
from ltsweep.cli import build_parser
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.cluster_profile import parse_profile
from ltsweep.sweep.schema import parse_sweep
from tests.helpers import ltsweep_cmd


def test_version(tmp_path) -> None:
    out = ltsweep_cmd("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"ltsweep {ltsweep.__version__}"


def test_every_argument_has_help() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"ltsweep {name}: {action.dest} has no help"


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        (
            {"name": "x", "grid": {"sedes": [0]}},
            "grid.sedes: unknown key 'sedes' (did you mean 'seeds'?)",
        ),
        (
            {"name": "x", "baseline": {}},
            "baseline: unknown key 'baseline' (did you mean 'baselines'?)",
        ),
        (
            {"name": "x", "ssl": {"simsiam": {"epocs": 3}}},
            "ssl.simsiam.epocs: unknown key 'epocs' (did you mean 'epochs'?)",
        ),
        ({"name": "x", "grid": {"zzzz": 1}}, "grid.zzzz: unknown key 'zzzz'"),
    ],
)
def test_a_mistyped_key_names_the_likely_one(spec: dict, said: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_sweep(spec, "s.yaml")
    assert str(err.value) == f"s.yaml: {said}"


def test_a_mistyped_profile_key_names_the_likely_one() -> None:
    with pytest.raises(
        SpecError, match=r"unknown key 'gpu_per_node' \(did you mean 'gpus_per_node'\?\)"
    ):
        parse_profile(
            {"partition": "gpu", "cpus_per_node": 8, "time_limit": 60, "gpu_per_node": 4}, "p.yaml"
        )
