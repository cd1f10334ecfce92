"""Each SSL loss against values computed by explicit Python loops on tiny batches.

The reference values are written out element by element (math on lists), never by calling
the function under test, so a shared vectorisation mistake cannot hide.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ltsweep.sweep.ssl_settings import BYOLSettings
from ltsweep.train.selfsup.barlow import barlow_loss
from ltsweep.train.selfsup.byol import BYOL, byol_loss, ema_momentum, ema_update
from ltsweep.train.selfsup.loop import make_optimizer
from ltsweep.train.selfsup.simclr import nt_xent
from ltsweep.train.selfsup.simsiam import negative_cosine

Z1 = [[1.0, 2.0, 0.5], [-0.5, 1.0, 2.0], [0.3, -1.0, 1.0]]
Z2 = [[0.8, 1.5, 1.0], [0.2, 1.2, 1.5], [-1.0, 0.4, 0.9]]


def t(rows: list[list[float]], grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32, requires_grad=grad)


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def cos(a: list[float], b: list[float]) -> float:
    return dot(a, b) / math.sqrt(dot(a, a) * dot(b, b))


# -- SimCLR ---------------------------------------------------------------------------------
def nt_xent_by_hand(z1: list[list[float]], z2: list[list[float]], temp: float) -> float:
    views = z1 + z2
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        denom = sum(math.exp(cos(views[i], views[k]) / temp) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(cos(views[i], views[partner]) / temp) / denom)
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.5, 0.1, 2.0])
def test_nt_xent_matches_hand_computation(temperature: float) -> None:
    got = float(nt_xent(t(Z1), t(Z2), temperature))
    assert got == pytest.approx(nt_xent_by_hand(Z1, Z2, temperature), rel=1e-5)


def test_nt_xent_temperature_changes_the_loss_and_default_is_half() -> None:
    from ltsweep.sweep.ssl_settings import SimCLRSettings

    assert SimCLRSettings().temperature == 0.5
    values = {tau: float(nt_xent(t(Z1), t(Z2), tau)) for tau in (0.1, 0.5, 2.0)}
    assert len({round(v, 6) for v in values.values()}) == 3


def test_nt_xent_is_scale_invariant_and_symmetric() -> None:
    a = float(nt_xent(t(Z1), t(Z2), 0.5))
    assert float(nt_xent(3 * t(Z1), 0.5 * t(Z2), 0.5)) == pytest.approx(a, rel=1e-5)
    assert float(nt_xent(t(Z2), t(Z1), 0.5)) == pytest.approx(a, rel=1e-5)


# -- SimSiam --------------------------------------------------------------------------------
def test_simsiam_negative_cosine_value_and_stop_gradient() -> None:
    p, z = t(Z1, grad=True), t(Z2, grad=True)
    loss = negative_cosine(p, z)
    expected = -sum(cos(a, b) for a, b in zip(Z1, Z2, strict=True)) / len(Z1)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert z.grad is None  # the target branch receives no gradient
    # d/dp of -cos(p, z) / N = -(z / (|p||z|) - cos(p, z) * p / |p|^2) / N, row by row
    for row, (a, b) in enumerate(zip(Z1, Z2, strict=True)):
        na, nb, c = math.sqrt(dot(a, a)), math.sqrt(dot(b, b)), cos(a, b)
        for j in range(3):
            g = -(b[j] / (na * nb) - c * a[j] / na**2) / len(Z1)
            assert float(p.grad[row, j]) == pytest.approx(g, rel=1e-4, abs=1e-6)


# -- BYOL -----------------------------------------------------------------------------------
def test_byol_loss_value_and_stop_gradient() -> None:
    p, z = t(Z1, grad=True), t(Z2, grad=True)
    loss = byol_loss(p, z)
    expected = sum(2 - 2 * cos(a, b) for a, b in zip(Z1, Z2, strict=True)) / len(Z1)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert z.grad is None and p.grad is not None


def test_byol_ema_momentum_schedule() -> None:
    assert ema_momentum(0.0, 0.99) == pytest.approx(0.99)
    assert ema_momentum(0.5, 0.99) == pytest.approx(0.995)
    assert ema_momentum(1.0, 0.99) == pytest.approx(1.0)
    assert BYOLSettings().ema_start == 0.99


def test_ema_update_formula_on_a_tiny_network() -> None:
    online, target = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        online.bias.copy_(torch.tensor([0.5, -0.5]))
        target.weight.copy_(torch.tensor([[-1.0, 0.0], [2.0, 10.0]]))
        target.bias.copy_(torch.tensor([1.0, 1.0]))
    tau = 0.9
    ema_update(target, online, tau)
    w_online, w_target = [[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.0], [2.0, 10.0]]
    for i in range(2):
        for j in range(2):
            want = tau * w_target[i][j] + (1 - tau) * w_online[i][j]
            assert float(target.weight[i, j].detach()) == pytest.approx(want, rel=1e-6)
    assert target.bias.tolist() == pytest.approx([0.9 * 1 + 0.1 * 0.5, 0.9 * 1 + 0.1 * -0.5])
    assert online.weight.tolist() == w_online  # the online network is not touched


class TinyEncoder(nn.Module):
    """Flatten + Linear: the smallest thing with the encoder interface (feat_dim)."""

    def __init__(self, feat_dim: int = 4) -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, feat_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_byol(seed: int = 0) -> BYOL:
    torch.manual_seed(seed)
    settings = BYOLSettings(proj_hidden=8, proj_dim=3, pred_hidden=5)
    return BYOL(TinyEncoder(), settings)


def test_byol_after_step_moves_the_target_by_the_scheduled_momentum() -> None:
    method = tiny_byol()
    opt = make_optimizer(method.parameters(), method.settings)
    method.loss(torch.rand(4, 3, 2, 2), torch.rand(4, 3, 2, 2)).backward()
    opt.step()
    online = [
        p.detach().clone() for m in (method.encoder, method.projector) for p in m.parameters()
    ]
    before = [p.detach().clone() for p in method.target.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(online, before, strict=True))
    method.after_step(0.5)  # tau = 0.995
    for o, b, a in zip(online, before, method.target.parameters(), strict=True):
        torch.testing.assert_close(a, 0.995 * b + 0.005 * o, rtol=0, atol=1e-7)


def test_byol_target_is_outside_the_optimiser_and_the_state_dict() -> None:
    method = tiny_byol()
    opt = make_optimizer(method.parameters(), method.settings)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    target_ids = {id(p) for p in method.target.parameters()}
    assert target_ids and not target_ids & in_opt
    online_ids = {
        id(p) for m in (method.encoder, method.projector, method.predictor) for p in m.parameters()
    }
    assert online_ids == in_opt
    assert all(not p.requires_grad for p in method.target.parameters())
    assert set(method.extra_state()) == set(method.target.state_dict())
    assert not any(k.startswith("target") for k in method.state_dict())
    # No gradient reaches the target through the loss.
    method.loss(torch.rand(4, 3, 2, 2), torch.rand(4, 3, 2, 2)).backward()
    assert all(p.grad is None for p in method.target.parameters())


def test_byol_target_follows_dtype_mode_and_checkpoint() -> None:
    method = tiny_byol()
    method.double()
    assert all(p.dtype == torch.float64 for p in method.target.parameters())
    method.eval()
    assert not method.target.training
    method.train()
    assert method.target.training
    method.float()
    method.after_step(0.0)
    other = tiny_byol(seed=1)
    other.load_extra_state(method.extra_state())
    for k, v in method.target.state_dict().items():
        assert torch.equal(v, other.target.state_dict()[k])


def test_byol_head_init_is_the_online_projector() -> None:
    method = tiny_byol()
    with torch.no_grad():
        method.target[1][0].weight.add_(1.0)  # make target and online projectors differ
    assert torch.equal(method.head_init()["w1"], method.projector[0].weight)


# -- Barlow Twins ---------------------------------------------------------------------------
def barlow_by_hand(z1: list[list[float]], z2: list[list[float]], lam: float) -> float:
    n, d = len(z1), len(z1[0])

    def standardise(z: list[list[float]]) -> list[list[float]]:
        out = [[0.0] * d for _ in range(n)]
        for j in range(d):
            col = [z[i][j] for i in range(n)]
            mean = sum(col) / n
            var = sum((x - mean) ** 2 for x in col) / n  # biased, as BatchNorm
            for i in range(n):
                out[i][j] = (col[i] - mean) / math.sqrt(var + 1e-5)
        return out

    a, b = standardise(z1), standardise(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k][i] * b[k][j] for k in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lam * c**2
    return loss


@pytest.mark.parametrize("lam", [0.005, 1.0, 0.0])
def test_barlow_loss_matches_hand_computation(lam: float) -> None:
    got = float(barlow_loss(t(Z1), t(Z2), lam))
    assert got == pytest.approx(barlow_by_hand(Z1, Z2, lam), rel=1e-5)


def test_barlow_lambda_weights_only_the_off_diagonal() -> None:
    on = float(barlow_loss(t(Z1), t(Z2), 0.0))
    off = float(barlow_loss(t(Z1), t(Z2), 1.0)) - on
    assert off > 0
    assert float(barlow_loss(t(Z1), t(Z2), 0.005)) == pytest.approx(on + 0.005 * off, rel=1e-5)
    # identical views: every C_ii is 1 (up to BatchNorm's eps), only the off-diagonal is left
    assert float(barlow_loss(t(Z1), t(Z1), 0.0)) == pytest.approx(0.0, abs=1e-4)
