"""Whatever a sweep file or a cluster profile holds, reading it ends in a Sweep / profile or in
one SpecError of one line, in bounded time and memory: random YAML documents, random
mutations of the real sweep files, and hostile files (alias bombs, deep nesting, binary).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltsweep.sweep.base import MAX_BYTES, SpecError, parse_yaml, read_yaml
from ltsweep.sweep.cluster_profile import parse_profile
from ltsweep.sweep.schema import parse_sweep
from tests.helpers import REPO

ROOT = REPO
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml")) + [ROOT / "tests" / "data" / "tiny.yaml"]
PROFILES = sorted((ROOT / "cluster").glob("*.yaml"))
FUZZ = settings(
    max_examples=200,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _outcome(text: str, parser) -> str:
    """'ok' or 'spec'; anything else (another exception, a multi-line message) fails."""
    t0 = time.perf_counter()
    try:
        parser(parse_yaml(text, "f.yaml"), "f.yaml")
        result = "ok"
    except SpecError as err:
        message = str(err)
        assert message.startswith("f.yaml") and "\n" not in message, message
        result = "spec"
    assert time.perf_counter() - t0 < 2.0
    return result


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["simsiam", "la+sl", "cifar10", "digits", "1:30:00", "auto", ".inf"]),
)
keys = st.one_of(
    st.sampled_from(
        [
            "name",
            "data",
            "grid",
            "ssl",
            "loss",
            "resources",
            "execution",
            "baselines",
            "seeds",
            "gamma",
            "noise",
            "epochs",
            "partition",
            "time_limit",
            "cpus_per_node",
            "extra_sbatch",
        ]
    ),
    st.text(max_size=8),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=6)),
    max_leaves=30,
)


@FUZZ
@given(documents)
def test_random_documents_parse_or_fail_in_one_line(doc):
    text = yaml.safe_dump(doc, allow_unicode=True)
    _outcome(text, parse_sweep)
    _outcome(text, parse_profile)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


MUTATIONS = st.sampled_from(
    ["delete", "duplicate", "replace_value", "indent", "garbage", "swap", "truncate"]
)


@FUZZ
@given(
    st.sampled_from(SWEEPS + PROFILES),
    st.lists(st.tuples(MUTATIONS, st.integers(0, 200), scalars), min_size=1, max_size=4),
)
def test_mutated_files_parse_or_fail_in_one_line(path, edits):
    lines = _lines(path)
    for kind, at, value in edits:
        if not lines:
            break
        i = at % len(lines)
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "replace_value" and ":" in lines[i]:
            head = lines[i].split(":", 1)[0]
            lines[i] = f"{head}: {yaml.safe_dump(value, default_flow_style=True).strip()}"
            lines[i] = lines[i].removesuffix("...").strip()
        elif kind == "indent":
            lines[i] = "  " + lines[i]
        elif kind == "garbage":
            lines[i] = lines[i][: at % (len(lines[i]) + 1)] + "{[&*!|>%@`"[at % 10]
        elif kind == "swap":
            j = (at * 7) % len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines = lines[: i + 1]
    parser = parse_profile if path in PROFILES else parse_sweep
    _outcome("\n".join(lines) + "\n", parser)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (BOMB.encode(), "aliases are expanded"),
        (("a: " + "[" * 20000 + "]" * 20000).encode(), "nested deeper"),
        (b"name: t\n\xff\xfe\x00garbage", "not UTF-8"),
        (b"name: t\nname: u\n", "duplicate key 'name'"),
        (b"1: x\n", "key 1 is not a string"),
        (b"null: x\n", "key None is not a string"),
        (b"name: t\n# " + b"x" * (MAX_BYTES + 10) + b"\n", "larger than"),
        (b"name: t\nexecution: {finetune_memory_gb: .inf}\n", "finite"),
        (b"name: t\nssl: {simsiam: {finetune: {lr: .inf}}}\n", "finite"),
        (b"name: t\nbackbone: {width: true}\n", "boolean, not a number"),
        (b"name: t\ngrid: {gamma: [1, 1.0e+300]}\n", "absurdly large"),
        (b"name: t\ngrid: {gamma: [1000]}\n", "leaves the smallest class no sample"),
        (b"name: t\ngrid: {seeds: [-1]}\n", "grid.seeds[0]"),
        (b"name: t\ngrid: {seeds: [4294967296]}\n", "grid.seeds[0]"),
        (b"name: t\ngrid: {pretrain_epochs: [900]}\n", "grid.pretrain_epochs[0]: 900 is beyond"),
        (b"name: t\ngrid: {ssl: []}\n", "nothing to run"),
        (b"name: t\ndata: {test_per_class: 200}\n", "data.test_per_class"),
        (b"name: ..\n", "not a safe folder name"),
        (b"name: " + b"a" * 5000 + b"\n", "a name has 1 to 100"),
        (b"name: a/b\n", "not a safe folder name"),
    ],
)
def test_hostile_sweep_files(tmp_path, content, expected):
    path = tmp_path / "s.yaml"
    path.write_bytes(content)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(SpecError) as err:
        parse_sweep(read_yaml(path, "sweep file"), str(path))
    assert time.perf_counter() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("time_limit: 1:30:00\n", "quote it ('1:30:00')"),
        ('time_limit: 30\nconstraint: "a100\\n#SBATCH --x"\n', "control character"),
        ('time_limit: 30\nextra_sbatch: ["--x=1\\r"]\n', "control character"),
        ('time_limit: 30\nsetup: ["ok\\u0007"]\n', "control character"),
    ],
)
def test_profile_values_that_would_reach_sbatch_badly(text, expected):
    with pytest.raises(SpecError) as err:
        parse_profile(parse_yaml("partition: p\ncpus_per_node: 1\n" + text, "p.yaml"), "p.yaml")
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "content",
    [BOMB.encode(), b"\xff\xfe", b"1: x\n", b"name: t\ngrid: {noise: [2]}\n", b"name: ..\n"],
)
def test_cli_exits_2_with_one_line(tmp_path, content):
    (tmp_path / "s.yaml").write_bytes(content)
    for command in ("plan", "run"):
        out = subprocess.run(
            [sys.executable, "-m", "ltsweep.cli", command, "s.yaml", "--run-dir", "r"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ltsweep: error: s.yaml"), lines
        assert not (tmp_path / "r").exists()
