"""The fine-tune groups are sized against the card before a run: a grid whose largest group does
not fit its share of the GPU is one line, exit 2, nothing written. No GPU here: the card is a
faked `ltsweep.gpu_probe.visible_gpus`."""

from __future__ import annotations

import pytest

from ltsweep import gpu_probe
from ltsweep.gpu_probe import GpuInfo
from ltsweep.planning.gpu_budget import CONTEXT_MIB, check_gpu_memory
from ltsweep.planning.plan import make_plan
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.estimate import features_bytes, finetune_bytes, finetune_group_bytes
from ltsweep.sweep.schema import parse_sweep
from ltsweep.units.finetune import finetune_groups

V100_16GB = GpuInfo("Tesla V100-SXM2-16GB", (7, 0), 16384, "580.65.06")
A100_80GB = GpuInfo("NVIDIA A100-SXM4-80GB", (8, 0), 81920, "580.65.06")


def _grid(**execution) -> dict:
    """Digits at full width: a SimSiam head's trials take ~17 MB each, 400 trials of one
    pre-train are stacked into groups of up to execution.finetune_memory_gb (4 GB)."""
    return {
        "name": "big-groups",
        "data": {"dataset": "digits"},
        "grid": {
            "noise": [0.2],
            "losses": ["ce", "ce+sl", "la", "la+sl"],
            "seeds": list(range(100)),
        },
        "resources": {
            "pretrain": {"cpu": 1, "gpu": 1},
            "finetune": {"cpu": 1, "gpu": 0.25},
        },
        "execution": {"device": "auto", **execution},
    }


def _card(monkeypatch, *gpus: GpuInfo) -> None:
    monkeypatch.setattr(gpu_probe, "visible_gpus", lambda: tuple(gpus))


def test_the_largest_group_is_what_the_estimate_says():
    sweep = parse_sweep(_grid())
    groups = finetune_groups(sweep, make_plan(sweep).finetunes)
    largest = max(groups, key=len)
    assert finetune_group_bytes(sweep, largest) == sum(
        finetune_bytes(sweep, u) for u in largest
    ) + features_bytes(sweep, largest[0])
    # cut to the budget: the trials fill at most finetune_memory_gb
    assert sum(finetune_bytes(sweep, u) for u in largest) <= 4 * 2**30
    assert finetune_group_bytes(sweep, largest) > 4 * 2**30 - CONTEXT_MIB * 2**20


def test_a_16_gb_card_refuses_four_groups_of_4_gb(monkeypatch):
    _card(monkeypatch, V100_16GB)
    with pytest.raises(SpecError) as err:
        check_gpu_memory(parse_sweep(_grid()), "big.yaml")
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("big.yaml: resources.finetune.gpu: a fine-tune group of ")
    assert "4 groups per GPU, 0.25 of a Tesla V100-SXM2-16GB (16 GiB) is 4.0 GiB" in line
    assert "raise resources.finetune.gpu to 0.3333" in line
    assert "lower execution.finetune_memory_gb to 3." in line


def test_the_settings_the_line_names_make_it_fit(monkeypatch):
    _card(monkeypatch, V100_16GB)
    assert check_gpu_memory(parse_sweep(_grid(finetune_memory_gb=3.4))) is None
    more = _grid()
    more["resources"]["finetune"]["gpu"] = 0.3333
    assert check_gpu_memory(parse_sweep(more)) is None


def test_an_80_gb_card_takes_the_same_grid(monkeypatch):
    _card(monkeypatch, A100_80GB)
    assert check_gpu_memory(parse_sweep(_grid()), "big.yaml") is None


def test_the_smallest_card_of_the_host_decides(monkeypatch):
    _card(monkeypatch, A100_80GB, V100_16GB)
    with pytest.raises(SpecError, match="Tesla V100"):
        check_gpu_memory(parse_sweep(_grid()))


def test_no_gpu_to_check_against_is_a_note(monkeypatch):
    _card(monkeypatch)
    note = check_gpu_memory(parse_sweep(_grid()))
    assert note is not None and note.startswith("GPU memory not checked: no GPU on this host")


def test_fine_tunes_on_the_cpu_are_not_sized(monkeypatch):
    _card(monkeypatch, V100_16GB)
    assert check_gpu_memory(parse_sweep(_grid(device="cpu"))) is None
    cpu_share = _grid()
    cpu_share["resources"]["finetune"]["gpu"] = 0
    assert check_gpu_memory(parse_sweep(cpu_share)) is None


def test_run_refuses_it_with_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import torch
    import yaml

    from ltsweep.cli import main

    _card(monkeypatch, V100_16GB)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the local GPU check passes
    sweep = tmp_path / "big.yaml"
    sweep.write_text(yaml.safe_dump(_grid()))
    run, cache = tmp_path / "run", tmp_path / "cache"
    code = main(["run", str(sweep), "--run-dir", str(run), "--cache-dir", str(cache)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "resources.finetune.gpu: a fine-tune group of" in err[0], err
    assert not run.exists() and not cache.exists()
