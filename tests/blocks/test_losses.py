"""Lambert W, SuperLoss and logit adjustment against closed forms and reference implementations."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import lambertw as scipy_lambertw

from ltsweep.losses import adjust_logits, label_prior, lambertw, superloss, superloss_sigma


def test_lambertw_matches_scipy_over_its_domain():
    z = np.concatenate(
        [
            -1 / math.e + np.logspace(-14, -1, 200),  # hugging the branch point
            np.linspace(-1 / math.e, 0, 5001),
            np.linspace(0, 20, 5001),
            np.logspace(1, 100, 500),
        ]
    )
    ours = lambertw(torch.tensor(z, dtype=torch.float64)).numpy()
    ref = scipy_lambertw(z).real
    at_branch = z == -1 / math.e  # scipy rounds its way to NaN exactly there; W0(-1/e) = -1
    assert np.all(ours[at_branch] == -1.0)
    np.testing.assert_allclose(
        ours[~at_branch], ref[~at_branch], rtol=1e-8, atol=1e-7
    )  # W's sqrt singularity


def test_lambertw_float32_branch_point_and_outside_domain():
    z = torch.tensor([-1 / math.e, 0.0, math.e], dtype=torch.float32)
    np.testing.assert_allclose(lambertw(z).numpy(), [-1.0, 0.0, 1.0], atol=1e-3)
    assert torch.isnan(lambertw(torch.tensor([-0.5], dtype=torch.float64))).all()
    assert torch.isnan(lambertw(torch.tensor([float("nan")], dtype=torch.float64))).all()


def _superloss_objective(sigma, loss, tau, lam):
    return (loss - tau) * sigma + lam * math.log(sigma) ** 2


@pytest.mark.parametrize("loss", [0.0, 0.3, 1.0, math.log(10), 3.0, 8.0, 30.0])
@pytest.mark.parametrize("lam", [0.25, 1.0, 4.0])
def test_superloss_sigma_is_the_argmin(loss, lam):
    tau = math.log(10)
    sigma = float(superloss_sigma(torch.tensor([loss], dtype=torch.float64), tau, lam))
    if (loss - tau) / lam < -2 / math.e:
        # no minimiser: the objective is unbounded below, and SuperLoss clamps to sigma* = e
        assert sigma == pytest.approx(math.e)
        return
    # brute force over sigma in (0, e]: for l < tau the objective has a local minimum (the W0
    # point, in [1, e]) and a local maximum beyond e (the W_-1 point), past which it falls
    # without bound; SuperLoss's confidence is the local minimum. A dense grid, then refined.
    grid = np.exp(np.linspace(-12, 1, 200001))
    values = (loss - tau) * grid + lam * np.log(grid) ** 2
    best = grid[values.argmin()]
    refined = minimize_scalar(
        _superloss_objective,
        bounds=(best / 1.01, best * 1.01),
        args=(loss, tau, lam),
        method="bounded",
        options={"xatol": 1e-12},
    ).x
    assert sigma == pytest.approx(refined, rel=1e-5)
    value = float(superloss(torch.tensor([loss], dtype=torch.float64), tau, lam))
    assert value == pytest.approx(_superloss_objective(refined, loss, tau, lam), abs=1e-9)


def test_superloss_bound_is_minus_two_over_e():
    # an easy sample with (l - tau)/lam far below -2/e is clamped: sigma* = e, the edge of W's domain
    sigma = superloss_sigma(torch.tensor([0.0]), tau=100.0, lam=1.0)
    assert float(sigma) == pytest.approx(math.e, rel=1e-4)


def test_superloss_gradient_is_sigma_star():
    loss = torch.tensor([0.5, 2.0, 6.0], dtype=torch.float64, requires_grad=True)
    superloss(loss, math.log(10), 4.0).sum().backward()
    torch.testing.assert_close(loss.grad, superloss_sigma(loss.detach(), math.log(10), 4.0))


def test_logit_adjustment_by_hand():
    labels = np.array([0, 0, 0, 1])  # prior (0.75, 0.25)
    prior = label_prior(labels, 2)
    torch.testing.assert_close(prior, torch.tensor([0.75, 0.25]))
    logits = torch.tensor([[1.0, 2.0]])
    adjusted = adjust_logits(logits, prior, tau=1.0)
    torch.testing.assert_close(adjusted, torch.tensor([[1 + math.log(0.75), 2 + math.log(0.25)]]))
    # LA loss of class 1 by hand: -log(e^{2+log .25} / (e^{1+log .75} + e^{2+log .25}))
    by_hand = -math.log(0.25 * math.e**2 / (0.75 * math.e + 0.25 * math.e**2))
    got = torch.nn.functional.cross_entropy(adjusted, torch.tensor([1]))
    assert float(got) == pytest.approx(by_hand, rel=1e-6)


def test_label_prior_keeps_absent_classes_finite():
    prior = label_prior(np.array([0, 0, 1]), 3)
    assert torch.isfinite(prior.log()).all() and prior[2] < 1e-3
