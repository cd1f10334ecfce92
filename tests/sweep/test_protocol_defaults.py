"""Every default against ../shared/PROTOCOL.md, read from its tables and text (not copied here).

Also: the data set decides the default image size (Clothing1M: 224), without changing the
content keys of digits / CIFAR sweeps.
"""

from __future__ import annotations

import math
import re

import pytest

from ltsweep.sweep.baseline_settings import DivideMixSettings, ELRSettings
from ltsweep.sweep.schema import DataSettings, LossSettings, parse_sweep
from ltsweep.sweep.ssl_settings import SSL_SETTINGS
from tests.helpers import SHARED

PROTOCOL = SHARED / "PROTOCOL.md"
#: the protocol's method names -> ours
METHODS = {"SimCLR": "simclr", "SimSiam": "simsiam", "BYOL": "byol", "Barlow Twins": "barlow"}
NUMBER = r"(\d+(?:\.\d+)?(?:e-?\d+)?)"


@pytest.fixture(scope="module")
def protocol() -> str:
    if not PROTOCOL.is_file():
        pytest.skip(f"the protocol is not available: {PROTOCOL} is absent")
    return PROTOCOL.read_text()


def _table(text: str, first_columns: str) -> dict[str, dict[str, str]]:
    """The markdown table whose header starts with `first_columns`: {first cell: {column: cell}}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_columns}"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in {text!r}"
    return float(match.group(1))


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_ssl_table(protocol):
    rows = _table(protocol, "method | head | optimizer")
    assert set(rows) == set(METHODS)
    for name, row in rows.items():
        s = SSL_SETTINGS[METHODS[name]]()
        assert s.optimizer == row["optimizer"].split()[0].lower(), name
        if "momentum" in row["optimizer"]:
            assert s.momentum == _number(r"momentum " + NUMBER, row["optimizer"]), name
        assert s.base_lr == _number(r"^" + NUMBER, row["lr"]), name
        scaled = re.search(r"\*\s*bs\s*/\s*256", row["lr"]) is not None
        assert s.lr_scaling == ("linear" if scaled else "none"), name
        assert s.weight_decay == _number(r"^" + NUMBER, row["wd"]), name
        assert s.epochs == int(row["epochs"]) and s.batch_size == int(row["batch"]), name


def test_ssl_heads(protocol):
    rows = {METHODS[k]: v["head"] for k, v in _table(protocol, "method | head | optimizer").items()}
    simclr = SSL_SETTINGS["simclr"]()
    assert simclr.temperature == _number(r"temperature " + NUMBER, rows["simclr"])
    first, middle, last = map(
        int, re.search(r"predictor (\d+)-(\d+)-(\d+)", rows["simsiam"]).groups()
    )
    simsiam = SSL_SETTINGS["simsiam"]()  # the predictor maps proj_dim -> pred_hidden -> proj_dim
    assert (simsiam.proj_dim, simsiam.pred_hidden, simsiam.proj_dim) == (first, middle, last)
    assert "2 FC" in rows["simsiam"]  # the projector: Linear-BN-ReLU-Linear(-BN)
    byol = SSL_SETTINGS["byol"]()
    proj_hidden, proj_dim = map(int, re.search(r"projection (\d+)-(\d+)", rows["byol"]).groups())
    assert (byol.proj_hidden, byol.proj_dim) == (proj_hidden, proj_dim)
    assert byol.ema_start == _number(r"EMA target \(" + NUMBER + r" -> 1 cosine", rows["byol"])
    barlow = SSL_SETTINGS["barlow"]()
    size = int(_number(r"hidden and output " + NUMBER, rows["barlow"]))
    assert barlow.proj_hidden == barlow.proj_dim == size == 2048
    assert barlow.lambda_offdiag == _number(r"lambda_offdiag " + NUMBER, rows["barlow"])


def test_schedule_and_knn_monitor(protocol):
    warmup = re.search(r"Schedule \(([^)]*)\): linear warm-up (\d+) epochs, then cosine", protocol)
    assert warmup
    for name in re.split(r",\s*", warmup.group(1)):
        s = SSL_SETTINGS[METHODS.get(name, name.lower())]()  # "Barlow" -> barlow
        assert (s.warmup_epochs, s.schedule) == (int(warmup.group(2)), "cosine"), name
    k = int(_number(r"k=" + NUMBER, protocol))
    temperature = _number(r"k=\d+,\s*temperature " + NUMBER, protocol)
    for cls in SSL_SETTINGS.values():
        assert (cls().knn_k, cls().knn_temperature) == (k, temperature), cls.__name__


def test_finetune_table(protocol):
    rows = _table(protocol, "method | what is trained | optimizer")
    assert set(rows) == set(METHODS)
    for name, row in rows.items():
        ft = SSL_SETTINGS[METHODS[name]]().finetune
        what = row["what is trained"]
        if what == "as SimSiam":
            what = rows["SimSiam"]["what is trained"]
        assert ft.head == ("linear" if "linear" in what else "mlp"), name
        assert ft.optimizer == row["optimizer"].split(",")[0].lower(), name
        if "no wd" in row["optimizer"]:
            assert ft.weight_decay == 0, name
        elif "wd" in row["optimizer"]:
            assert ft.weight_decay == _number(r"wd " + NUMBER, row["optimizer"]), name
        assert ft.lr == float(row["lr"]), name
        assert (ft.epochs, ft.batch_size) == (int(row["epochs"]), int(row["batch"])), name
        if row["switch"] == "-":
            assert ft.last_layer_above is None, name
        else:
            above = _number(r"noise > " + NUMBER + r" %", row["switch"]) / 100
            assert ft.last_layer_above == pytest.approx(above), name
            assert ft.last_layer_lr == _number(r"lr " + NUMBER, row["switch"]), name


def test_losses(protocol):
    losses = _section(protocol, "Losses")
    la = re.search(r"LA \(logit adjustment.*?tau = " + NUMBER, losses, re.S)
    assert la and LossSettings().la_tau == float(la.group(1))
    assert LossSettings().sl_lambda == _number(r"lam = " + NUMBER + r" in the paper", losses)
    assert "t = log(C)" in losses and LossSettings().sl_threshold is None  # None = log(C)


def test_baselines(protocol):
    text = _section(protocol, "Baselines")
    elr = ELRSettings()
    for dataset, name in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100")):
        beta = _number(name + r"\s+beta\s+" + NUMBER, text)
        lam = _number(name + r"\s+beta\s+[\d.]+,\s+lambda\s+" + NUMBER, text)
        got = elr.resolved(dataset)
        assert (got.beta, got.lam) == (beta, lam), dataset
    dm = DivideMixSettings()
    assert dm.alpha == _number(r"MixMatch\s+\(alpha\s+" + NUMBER, text)
    assert dm.T == _number(r"MixMatch\s+\(alpha\s+[\d.]+,\s+T\s+" + NUMBER, text)


# --- the image size follows the data set --------------------------------------------------


def test_image_size_defaults_by_dataset():
    assert DataSettings(dataset="clothing1m").image_size == 224
    for dataset in ("digits", "cifar10", "cifar100"):
        assert DataSettings(dataset=dataset).image_size == 32
    assert DataSettings().image_size == 32
    assert DataSettings(dataset="clothing1m", image_size=112).image_size == 112  # explicit wins
    assert DataSettings(dataset="digits", image_size=None).image_size == 32
    sweep = parse_sweep({"name": "c", "data": {"dataset": "clothing1m"}})
    assert sweep.data.image_size == 224 and sweep.data.identity()["image_size"] == 224
    assert sweep.data.model_dump()["image_size"] == 224  # what the worker's loader reads


def test_default_image_size_keeps_digits_and_cifar_keys():
    from ltsweep.planning.plan import make_plan
    from ltsweep.units.baseline import plan_baselines

    def keys(data):
        # Clothing1M refuses single-stage baselines (CIFAR settings)
        methods = [] if data["dataset"] == "clothing1m" else ["ce"]
        sweep = parse_sweep({"name": "k", "data": data, "baselines": {"methods": methods}})
        plan = make_plan(sweep)
        return [u.key for u in [*plan.pretrains, *plan.finetunes, *plan_baselines(sweep)]]

    for dataset in ("digits", "cifar10", "cifar100"):
        assert keys({"dataset": dataset}) == keys({"dataset": dataset, "image_size": 32})
    clothing = keys({"dataset": "clothing1m"})
    assert clothing == keys({"dataset": "clothing1m", "image_size": 224})
    assert clothing != keys({"dataset": "clothing1m", "image_size": 32})


def test_sl_threshold_default_is_log_c():
    from ltsweep.planning.plan import make_plan

    plan = make_plan(parse_sweep({"name": "t", "data": {"dataset": "cifar100"}}))
    assert {u.sl_threshold for u in plan.finetunes} == {math.log(100)}
