"""Bad input: one line naming the field or file, exit status 2, nothing stored touched."""

import textwrap

import pytest

from ltsweep.cli import main
from tests.helpers import REPO

GOOD = """
name: t
grid:
  gamma: [1, 10]
  noise: [0.0, 0.2]
"""


def _write(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    "text,expected",
    [
        ("name: t\ngrid:\n  noise: [0, 0.2, 0.4, 1.2]\n", "grid.noise[3]: 1.2 is not in [0, 1)"),
        ("name: t\ngrid:\n  noise: [-0.1]\n", "grid.noise[0]: -0.1 is not in [0, 1)"),
        ("name: t\ngrid:\n  gamma: [1, 0.5]\n", "grid.gamma[1]: 0.5 is not >= 1"),
        ("name: t\ngrid:\n  ssl: [simsiam, moco]\n", "grid.ssl[1]: unknown SSL method 'moco'"),
        ("name: t\ngrid:\n  losses: [ce, focal]\n", "grid.losses[1]: unknown loss 'focal'"),
        ("name: t\ngrid:\n  nosie: [0.1]\n", "grid.nosie: unknown key 'nosie'"),
        ("name: t\nssl:\n  simsiam:\n    epochs: 0\n", "ssl.simsiam.epochs"),
        ("name: t\nssl:\n  simsiam:\n    finetune: {lr: -1}\n", "ssl.simsiam.finetune.lr"),
        ("grid: {}\n", "name: required field is missing"),
        ("name: t\ngrid: [1, 2\n", "malformed YAML"),
        ("- just\n- a list\n", "a sweep file is a YAML mapping"),
        ("name: t\ndata:\n  dataset: imagenet\n", "data.dataset"),
        (
            "name: t\nbaselines:\n  methods: [elr]\n  elr:\n    by_dataset: {}\n",
            "baselines.elr.by_dataset: no beta/lam for data set 'digits'",
        ),
        (
            "name: t\nbaselines:\n  methods: [dividemix]\n  dividemix:\n    lambda_u_table: {}\n",
            "baselines.dividemix.lambda_u_table: no entry for data set 'digits'",
        ),
        (
            "name: t\nbaselines:\n  methods: [dividemix]\n"
            "  dividemix:\n    lambda_u_table: {digits: {}}\n",
            "baselines.dividemix.lambda_u_table: no entry for data set 'digits'",
        ),
        (
            "name: t\nbaselines:\n  methods: [elr+]\n  elr_plus:\n    by_dataset: {}\n",
            "baselines.elr_plus.by_dataset: no settings for data set 'digits'",
        ),
    ],
)
@pytest.mark.parametrize("command", ["run", "plan"])
def test_bad_sweep_exits_2_naming_the_field(tmp_path, capsys, monkeypatch, text, expected, command):
    monkeypatch.delenv("LTSWEEP_DATA", raising=False)
    run_dir = tmp_path / "run"
    (run_dir / "results").mkdir(parents=True)
    stored = run_dir / "results" / "keep.parquet"
    stored.write_bytes(b"stored before")
    code = main([command, str(_write(tmp_path, text)), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("ltsweep: error: ") and expected in err[0], err
    assert "s.yaml" in err[0] or "data.root" in err[0]
    assert stored.read_bytes() == b"stored before"
    assert sorted(p.name for p in run_dir.rglob("*")) == ["keep.parquet", "results"]


def test_missing_sweep_file(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such sweep file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text,expected",
    [
        ("name: t\ndata: {dataset: cifar100}\n", "data.root: cifar100 needs a data root"),
        (
            "name: t\ndata:\n  dataset: cifar10\n  root: /nonexistent/data\n",
            "data.root: /nonexistent/data does not exist",
        ),
    ],
)
def test_a_missing_data_root_stops_run_but_not_plan(tmp_path, capsys, monkeypatch, text, expected):
    """`run` needs the data (exit 2, nothing written); `plan` does not (a cluster's grid is
    planned on a laptop): it plans from the data set's known sizes and notes what run needs."""
    monkeypatch.delenv("LTSWEEP_DATA", raising=False)
    sweep, run_dir = _write(tmp_path, text), tmp_path / "run"
    assert main(["run", str(sweep), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and not run_dir.exists()
    assert main(["plan", str(sweep), "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "pre-train jobs :" in out and f"note: {sweep}: {expected}" in out
    assert "`ltsweep run` needs it, `plan` does not" in out


def test_status_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_plan_counts(tmp_path, capsys):
    assert main(["plan", str(_write(tmp_path, GOOD)), "--run-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "pre-train jobs :      2  (0 stored, 2 to run)" in out
    assert "fine-tune trials:     4  (0 stored, 4 to run in 2 Tune trials)" in out


def test_cluster_without_sbatch_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """`--cluster` on a machine without SLURM: refused before the run folder is made."""

    profile = REPO / "cluster" / "local-nodes.yaml"
    sweep = _write(tmp_path, GOOD)
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-bin"))
    monkeypatch.setenv("LTSWEEP_CACHE", str(tmp_path / "cache"))
    code = main(["run", str(sweep), "--cluster", str(profile), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "--cluster: no `sbatch` on PATH" in err[0], err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_more_cpus_than_the_local_ray_has_is_refused_before_anything_is_written(tmp_path, capsys):
    run_dir = tmp_path / "run"
    sweep = _write(tmp_path, "name: t\nresources:\n  pretrain: {cpu: 4096}\n")
    code = main(["run", str(sweep), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "s.yaml: resources.pretrain.cpu: 4096 CPUs asked" in err[0], err
    assert not run_dir.exists()
