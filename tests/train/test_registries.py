"""The extension points' registries stay in step: each name a sweep file accepts has its
trainer, each trainer its name, and the cost hints match the modules the trainers build.

A method added to one registry and not the other fails here, not on a worker."""

from __future__ import annotations

import dataclasses

import pytest
from torch import nn

from ltsweep.data import LOADERS
from ltsweep.losses import LOSSES as TRAIN_LOSSES
from ltsweep.models.resnet import build_encoder
from ltsweep.sweep import estimate
from ltsweep.sweep.baseline_settings import BASELINE_METHODS, BASELINES
from ltsweep.sweep.losses import FINETUNE_LOSSES, LOSSES, SUPERVISED_LOSSES
from ltsweep.sweep.schema import DATASETS, NUM_CLASSES, DataSettings, parse_sweep
from ltsweep.sweep.schema import LOSSES as GRID_LOSSES
from ltsweep.sweep.ssl_settings import SSL_METHODS, SSL_SETTINGS
from ltsweep.train.baselines.registry import TRAINERS, build_baseline
from ltsweep.train.selfsup.base import REGISTRY, SSLMethod, build_method
from ltsweep.units.baseline import method_params


def test_ssl_methods_have_a_trainer_and_settings():
    assert set(SSL_METHODS) == set(REGISTRY) == set(SSL_SETTINGS)


@pytest.mark.parametrize("name", list(SSL_METHODS))
def test_ssl_cost_hints_match_the_trainer(name):
    """The estimate's hints (predictor, target, the projector's widths) are what is built."""
    spec = SSL_METHODS[name]
    extra = {"pred_hidden": 8} if spec.predictor else {}
    settings = spec.settings(proj_hidden=12, proj_dim=6, **extra)
    encoder = build_encoder("resnet18", 2, "cifar")
    method = build_method(name, encoder, settings)
    assert isinstance(method, SSLMethod)
    linears = [m for m in method.projector if isinstance(m, nn.Linear)]
    widths = [linears[0].in_features] + [m.out_features for m in linears]
    assert widths == settings.projector_dims(encoder.feat_dim)
    assert hasattr(method, "predictor") == spec.predictor
    assert hasattr(method, "target") == spec.target
    if spec.predictor:
        shapes = [
            (m.in_features, m.out_features) for m in method.predictor if isinstance(m, nn.Linear)
        ]
        assert shapes == [(6, 8), (8, 6)]


def test_baselines_have_a_trainer():
    assert tuple(BASELINE_METHODS) == BASELINES
    assert set(BASELINE_METHODS) == set(TRAINERS)


#: every baseline at once, on the digits (DivideMix's table has every data set)
ALL_BASELINES = {
    "name": "r",
    "data": {"dataset": "digits", "image_size": 8},
    "backbone": {"width": 2},
    "grid": {"ssl": ["simsiam"], "gamma": [1], "noise": [0.2], "losses": ["ce"]},
    "baselines": {"methods": list(BASELINES)},
}


@pytest.mark.parametrize("name", list(BASELINE_METHODS))
def test_baseline_params_build_its_trainer(name):
    """The params the sweep layer resolves are exactly what the trainer's dataclass takes, and
    the networks the cost model counts are the networks the method trains."""
    sweep = parse_sweep(ALL_BASELINES)
    params = method_params(sweep, name, 0.2)
    assert {f.name for f in dataclasses.fields(TRAINERS[name].params)} >= set(params)
    method = build_baseline(name, params)
    assert method.networks == BASELINE_METHODS[name].networks


def test_unknown_baseline_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown baseline 'no-such-method'"):
        build_baseline("no-such-method", {})


def test_losses_are_the_same_in_both_layers():
    assert set(LOSSES) == set(TRAIN_LOSSES)
    for name, spec in LOSSES.items():
        assert dataclasses.asdict(spec) == dataclasses.asdict(TRAIN_LOSSES[name])
    assert set(GRID_LOSSES) == set(FINETUNE_LOSSES) <= set(LOSSES)
    assert set(SUPERVISED_LOSSES) <= set(BASELINES)


@pytest.mark.parametrize("name", DATASETS)
def test_datasets_have_a_loader_classes_and_a_size(name):
    """A data set the schema accepts is loadable and priced (no KeyError on a worker)."""
    assert set(DATASETS) == set(LOADERS)
    assert NUM_CLASSES[name] >= 2
    settings = DataSettings(dataset=name)
    assert estimate.pool_per_class(settings) > 0 and estimate.test_size(settings) > 0
    assert estimate.geometry(settings)[1] in ("cifar", "imagenet")
