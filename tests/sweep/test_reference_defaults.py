"""Defaults that follow the methods' reference code, each default read against the source it follows.

The sources are quoted here (they cannot be fetched in a test): the DivideMix authors'
answer in LiJunnan1992/DivideMix issue #10, the DivideMix appendix's lambda_u table,
shengliu66/ELR's ELR_plus configs, solo-learn's CIFAR pre-training recipes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ltsweep.planning.plan import make_plan
from ltsweep.sweep.base import SpecError
from ltsweep.sweep.baseline_settings import DivideMixSettings
from ltsweep.sweep.schema import parse_sweep
from ltsweep.sweep.ssl_settings import (
    SSL_SETTINGS,
    BarlowTwinsSettings,
    BYOLSettings,
    SimSiamSettings,
)
from ltsweep.units.base import label_file
from tests.helpers import SHARED

#: LiJunnan1992/DivideMix issue #10, the authors' comment (2020-06-19)
DIVIDEMIX_ISSUE_10 = "According to our paper, lambda_u=150, and p_threshold=0.6 for 90% noise."
#: DivideMix (ICLR 2020) Appendix B, lambda_u by symmetric noise 20 / 50 / 80 / 90 %
DIVIDEMIX_APPENDIX_LAMBDA_U = {
    "cifar10": (0, 25, 25, 50),
    "cifar100": (25, 150, 150, 150),
}


def test_dividemix_p_threshold_follows_the_authors_at_90_percent():
    quoted = float(re.search(r"p_threshold=(\d\.\d+) for 90% noise", DIVIDEMIX_ISSUE_10).group(1))
    dm = DivideMixSettings()
    assert dm.resolved_p_threshold(0.9) == quoted == 0.6
    assert dm.resolved_p_threshold(0.95) == quoted  # above the last level: its entry
    for noise in (0.0, 0.2, 0.5, 0.8):  # Train_cifar.py's default elsewhere
        assert dm.resolved_p_threshold(noise) == 0.5
    assert dm.resolved_p_threshold(0.85) == 0.6  # nearest level at or above, as lambda_u
    assert DivideMixSettings(p_threshold=0.7).resolved_p_threshold(0.9) == 0.7


def test_dividemix_lambda_u_follows_the_appendix():
    quoted = float(re.search(r"lambda_u=(\d+)", DIVIDEMIX_ISSUE_10).group(1))
    dm = DivideMixSettings()
    assert dm.resolved_lambda_u("cifar100", 0.9) == quoted
    for dataset, values in DIVIDEMIX_APPENDIX_LAMBDA_U.items():
        got = tuple(dm.resolved_lambda_u(dataset, nu) for nu in (0.2, 0.5, 0.8, 0.9))
        assert got == values, dataset


# --- cifar-n: the labels' measured noise rate decides what noise 0 used to -----------------

CIFAR10N = SHARED / "data" / "cifar-n" / "cifar10n_labels.npz"


def _cifar_n_sweep(path: Path, key: str, **labels):
    return parse_sweep(
        {
            "name": "n",
            "data": {
                "dataset": "cifar10",
                "noisy_labels": {"path": str(path), "key": key, **labels},
            },
            "grid": {
                "ssl": ["simsiam", "byol", "barlow"],
                "noise_type": "cifar-n",
                "losses": ["ce"],
            },
            "baselines": {"methods": ["dividemix"]},
        }
    )


def _heads_and_dividemix(sweep):
    plan = make_plan(sweep)
    heads = {u.method: u.head for u in plan.finetunes}
    (dm,) = [u.settings["params"] for u in plan.baselines]
    return heads, dm


@pytest.mark.skipif(not CIFAR10N.is_file(), reason=f"{CIFAR10N} is absent")
def test_cifar_n_worse_label_is_treated_as_40_percent_noise():
    """CIFAR-10N worse_label: 40.2 % of the labels differ from clean_label (its published rate).

    The protocol's switch (PROTOCOL.md, Fine-tuning: last FC only above 60 / 40 / 20 % for
    SimSiam / BYOL / Barlow) and DivideMix's lambda_u (Appendix B, CIFAR-10 at 50 %: 25) now
    see 40.2 %, where they used to see noise 0.
    """
    sweep = _cifar_n_sweep(CIFAR10N, "worse_label")
    labels = label_file(sweep)
    assert labels["noise_rate"] == pytest.approx(0.40208)
    heads, dm = _heads_and_dividemix(sweep)
    assert heads == {"simsiam": "full", "byol": "last", "barlow": "last"}
    assert (dm["lambda_u"], dm["p_threshold"], dm["average_losses"]) == (25.0, 0.5, False)
    # aggre_label (9.0 %): below every threshold, DivideMix's 20 % row (lambda_u 0)
    heads, dm = _heads_and_dividemix(_cifar_n_sweep(CIFAR10N, "aggre_label"))
    assert heads == {"simsiam": "full", "byol": "full", "barlow": "full"}
    assert dm["lambda_u"] == 0.0


def test_cifar_n_noise_rate_given_or_refused(tmp_path):
    path = tmp_path / "n.npz"
    clean = np.arange(1000) % 10
    noisy = clean.copy()
    noisy[:700] = (noisy[:700] + 1) % 10  # 70 %
    np.savez(path, clean_label=clean, worse_label=noisy)
    heads, dm = _heads_and_dividemix(_cifar_n_sweep(path, "worse_label"))
    assert heads == {"simsiam": "last", "byol": "last", "barlow": "last"}
    assert dm["lambda_u"] == 25.0  # the 80 % row
    # an explicit rate wins over the measured one
    heads, _ = _heads_and_dividemix(_cifar_n_sweep(path, "worse_label", noise_rate=0.1))
    assert heads == {"simsiam": "full", "byol": "full", "barlow": "full"}
    # no clean labels to measure against and no rate given: one line naming the field
    np.savez(path, worse_label=noisy)
    with pytest.raises(
        SpecError, match="data.noisy_labels.clean_key: .* has no array 'clean_label'"
    ):
        make_plan(_cifar_n_sweep(path, "worse_label"))


# --- SSL projectors: the reference code's layer types -----------------------------------


def test_simsiam_projector_ends_in_a_non_affine_batchnorm():
    """facebookresearch/simsiam builder.py and solo-learn: BatchNorm1d(dim, affine=False)."""
    from ltsweep.models.resnet import build_encoder
    from ltsweep.train.selfsup.simsiam import SimSiam

    s = SimSiamSettings(proj_hidden=16, proj_dim=8, pred_hidden=4)
    last = SimSiam(build_encoder("resnet18", 4, "cifar"), s).projector[-1]
    assert isinstance(last, torch.nn.BatchNorm1d) and not last.affine
    assert (
        sum(
            isinstance(m, torch.nn.Linear)
            for m in SimSiam(build_encoder("resnet18", 4, "cifar"), s).projector
        )
        == 2
    )


def test_barlow_projector_has_the_original_three_layers():
    """facebookresearch/barlowtwins and solo-learn: Linear-BN-ReLU x 2, then Linear; the paper
    sets the widths (2048, PROTOCOL.md), not the depth."""
    from ltsweep.models.resnet import build_encoder
    from ltsweep.train.selfsup.barlow import BarlowTwins

    s = BarlowTwinsSettings()
    assert (s.proj_layers, s.proj_hidden, s.proj_dim) == (3, 2048, 2048)
    head = BarlowTwins(
        build_encoder("resnet18", 4, "cifar"), BarlowTwinsSettings(proj_hidden=16, proj_dim=8)
    ).projector
    linears = [m for m in head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 16), (16, 16), (16, 8)]
    assert isinstance(head[1], torch.nn.BatchNorm1d)  # the fine-tune head's first block


# --- augmentation recipes: solo-learn's CIFAR yamls, per method -------------------------

#: vturrisi/solo-learn scripts/pretrain/cifar/augmentations/*.yaml, per view: crop_min_scale,
#: brightness, contrast, saturation, hue, jitter prob, grayscale prob, solarization prob
SOLO_LEARN = {
    "symmetric_weak.yaml": [(0.08, 0.4, 0.4, 0.4, 0.1, 0.8, 0.2, 0.0)] * 2,
    "symmetric.yaml": [(0.08, 0.8, 0.8, 0.8, 0.2, 0.8, 0.2, 0.0)] * 2,
    "asymmetric.yaml": [
        (0.08, 0.4, 0.4, 0.2, 0.1, 0.8, 0.2, 0.0),
        (0.08, 0.4, 0.4, 0.2, 0.1, 0.8, 0.2, 0.2),
    ],
}
#: scripts/pretrain/cifar/<method>.yaml `defaults: augmentations:`
RECIPE = {
    "simsiam": "symmetric_weak.yaml",
    "simclr": "symmetric.yaml",
    "byol": "asymmetric.yaml",
    "barlow": "asymmetric.yaml",
}


@pytest.mark.parametrize("method", sorted(RECIPE))
def test_each_method_augments_with_its_solo_learn_cifar_recipe(method):
    a = SSL_SETTINGS[method]().augment
    for which, ref in enumerate(SOLO_LEARN[RECIPE[method]]):
        got = (
            a.crop_scale_min,
            a.brightness,
            a.contrast,
            a.saturation,
            a.hue,
            a.jitter_p,
            a.grayscale_p,
            a.solarize_p[which],
        )
        assert got == ref, (method, which)
    assert a.blur_p_at(32) == (0.0, 0.0)  # PROTOCOL.md: blur off for 32x32
    imagenet_blur = {
        "simsiam": (0.5, 0.5),
        "simclr": (0.5, 0.5),
        "byol": (1.0, 0.1),
        "barlow": (1.0, 0.1),
    }
    assert a.blur_p_at(224) == imagenet_blur[method]  # Clothing1M: the ImageNet recipes blur
    # an override keeps the rest of the method's own recipe
    sweep = parse_sweep(
        {
            "name": "a",
            "grid": {"ssl": [method]},
            "ssl": {method: {"augment": {"crop_scale_min": 0.2}}},
        }
    )
    over = sweep.ssl_settings(method).augment
    assert (
        over.crop_scale_min == 0.2
        and over.solarize_p == a.solarize_p
        and over.saturation == a.saturation
    )


def test_solarize_and_blur_are_batched_and_seeded():
    from ltsweep.augment import blur_kernel_size, gaussian_blur, solarize, two_views

    x = torch.linspace(0, 1, 2 * 3 * 8 * 8).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    y = solarize(x, 1.0, gen)
    assert torch.equal(y, torch.where(x >= 128 / 255, 1 - x, x))
    assert torch.equal(solarize(x, 0.0, gen), x)
    state = gen.get_state()
    assert torch.equal(gaussian_blur(x, 0.0, (0.1, 2.0), gen), x)
    assert torch.equal(gen.get_state(), state)  # probability 0 draws nothing
    # a constant image stays constant; a blurred impulse keeps its mass and spreads
    imp = torch.zeros(1, 1, 9, 9)
    imp[0, 0, 4, 4] = 1.0
    b = gaussian_blur(imp, 1.0, (1.0, 1.0), gen)
    assert b.sum().item() == pytest.approx(1.0, abs=1e-5) and 0 < b[0, 0, 4, 4] < 1
    assert torch.allclose(
        gaussian_blur(torch.full((2, 3, 9, 9), 0.3), 1.0, (0.5, 2.0), gen),
        torch.full((2, 3, 9, 9), 0.3),
    )
    assert blur_kernel_size(224) == 23 and blur_kernel_size(32) == 3
    # views cropped to a smaller side (Clothing1M: 224 out of 256)
    u8 = (torch.rand(4, 3, 20, 20, generator=gen) * 255).to(torch.uint8)
    v1, v2 = two_views(u8, BYOLSettings().augment, torch.Generator().manual_seed(1), out_size=16)
    assert v1.shape == v2.shape == (4, 3, 16, 16)
    w1, _ = two_views(u8, BYOLSettings().augment, torch.Generator().manual_seed(1), out_size=16)
    assert torch.equal(v1, w1)


def test_clothing1m_baselines_are_refused_in_one_line():
    with pytest.raises(
        SpecError,
        match=r"^c\.yaml: baselines\.methods: single-stage baselines are not supported on clothing1m",
    ):
        parse_sweep(
            {"name": "c", "data": {"dataset": "clothing1m"}, "baselines": {"methods": ["elr"]}},
            "c.yaml",
        )


def test_clothing1m_views_are_cropped_from_the_whole_shorter_side(tmp_path):
    """The test image is the 224 centre crop of a 256 resize; the SSL views come from the
    256 x 256 centre square (the whole shorter side), and are 224 after the random crop."""
    from PIL import Image

    from ltsweep.data.clothing1m import FileImageSet, decode_image

    path = tmp_path / "a.jpg"
    Image.fromarray((np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)).save(
        path
    )
    assert decode_image(str(path), 224, draft=False).shape == (3, 224, 224)
    big = decode_image(str(path), 224, draft=False, crop=256)
    assert big.shape == (3, 256, 256)
    # the test crop is the centre of the view source
    assert np.array_equal(big[:, 16:240, 16:240], decode_image(str(path), 224, draft=False))
    images = FileImageSet([str(path)] * 2, np.zeros(2), 224, train=True, draft=False)
    assert images.images(np.arange(2)).shape == (2, 3, 224, 224)
    assert images.view_images(np.arange(2)).shape == (2, 3, 256, 256)


def test_dividemix_trains_on_the_reference_schedule_by_default():
    """Train_cifar.py: 300 epochs, lr / 10 from epoch 150; `schedule: shared` keeps the shared
    budget (epochs, cosine) as an option."""
    from ltsweep.train.baselines.common import Budget
    from ltsweep.train.baselines.dividemix import DivideMix, DivideMixParams

    def units(dm: dict):
        sweep = parse_sweep(
            {
                "name": "dm",
                "data": {"dataset": "cifar10"},
                "grid": {"ssl": ["simsiam"], "gamma": [100], "noise": [0.2]},
                "baselines": {"methods": ["ce", "dividemix"], "epochs": 200, "dividemix": dm},
            }
        )
        return {u.method: u for u in make_plan(sweep).baselines}

    ref = units({})
    assert (ref["dividemix"].epochs, ref["ce"].epochs) == (300, 200)
    assert ref["dividemix"].settings["budget"]["epochs"] == 300
    params = DivideMixParams(**ref["dividemix"].settings["params"])
    assert params.lr_decay_epoch == 150
    budget = Budget.of(ref["dividemix"].settings["budget"])
    lrs = [DivideMix(params).epoch_lr(budget, e) for e in (0, 149, 150, 299)]
    assert lrs == pytest.approx([0.02, 0.02, 0.002, 0.002])

    shared = units({"schedule": "shared"})
    assert shared["dividemix"].epochs == 200
    assert shared["dividemix"].settings["params"]["lr_decay_epoch"] is None
    assert shared["dividemix"].key != ref["dividemix"].key
    assert shared["ce"].key == ref["ce"].key  # the other baselines do not move
    p = DivideMixParams(**shared["dividemix"].settings["params"])
    b = Budget.of(shared["dividemix"].settings["budget"])
    assert DivideMix(p).epoch_lr(b, 100) == pytest.approx(0.01)  # cosine at half-way


def test_simsiam_predictor_keeps_its_learning_rate(tmp_path):
    """The reference (--fix-pred-lr) and solo-learn (static_lr) keep the predictor's lr fixed
    while the encoder and projector warm up and decay."""
    from ltsweep.models.resnet import build_encoder
    from ltsweep.sweep.ssl_settings import SimSiamSettings
    from ltsweep.train.selfsup.simsiam import SimSiam

    settings = SimSiamSettings(proj_hidden=16, proj_dim=16, pred_hidden=8)
    method = SimSiam(build_encoder("resnet18", width=4, stem="cifar"), settings)
    groups = method.param_groups()
    assert [g["fixed_lr"] for g in groups] == [False, True]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in method.predictor.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(method.parameters()))
    scheduled = SimSiam(
        build_encoder("resnet18", width=4, stem="cifar"),
        settings.model_copy(update={"predictor_lr": "schedule"}),
    )
    assert [g["fixed_lr"] for g in scheduled.param_groups()] == [False]


@pytest.mark.usefixtures("one_thread")
def test_simsiam_pretrain_decays_all_but_the_predictor(tmp_path):
    from ltsweep.data.digits import load_digits_dataset
    from ltsweep.data.imbalance import long_tail_indices
    from ltsweep.models.resnet import build_encoder
    from ltsweep.sweep.ssl_settings import SimSiamSettings
    from ltsweep.train.selfsup.loop import CHECKPOINT, Batches, pretrain
    from ltsweep.train.selfsup.simsiam import SimSiam

    ds = load_digits_dataset(image_size=8)
    index = long_tail_indices(ds.train.labels, ds.num_classes, gamma=1.0, seed=0)[:128]
    data = Batches(ds.train, index, ds.test, ds.num_classes, ds.mean, ds.std)
    settings = SimSiamSettings(
        proj_hidden=8, proj_dim=8, pred_hidden=4, batch_size=64, epochs=3, warmup_epochs=1,
        knn_every=3, checkpoint_every=1,
    )  # fmt: skip
    torch.manual_seed(0)
    method = SimSiam(build_encoder("resnet18", 4, "cifar"), settings)
    state = pretrain(method, data, settings, torch.device("cpu"), tmp_path, seed=0, amp=False)
    blob = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    lrs = [g["lr"] for g in blob["optimizer"]["param_groups"]]
    assert lrs[1] == settings.lr()  # the predictor: the base rate, after warm-up and decay
    assert lrs[0] == pytest.approx(state.lr) and lrs[0] < settings.lr()
