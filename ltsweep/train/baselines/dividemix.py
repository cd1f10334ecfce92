"""DivideMix (Li et al., ICLR 2020) [LiJunnan1992/DivideMix, Train_CIFAR.py], sized to the subset.

Two networks. Warm-up: each trained with CE on the noisy labels. Then every epoch:
1. co-divide: each net's per-sample CE on the whole training subset (eval mode, no
   augmentation) is min-max normalised, a 2-component GMM is fitted to it and a sample's
   clean probability w is the posterior of the low-mean component; net A then trains on
   the labelled (w > p_threshold) / unlabelled split given by net B's GMM, and vice versa;
2. label refinement (labelled): w * y + (1 - w) * mean of the net's two views, sharpened;
   label co-guessing (unlabelled): mean over both nets and both views, sharpened;
3. MixMatch: lambda ~ Beta(alpha, alpha), lambda' = max(lambda, 1 - lambda), inputs and
   targets mixed with a random permutation of the whole batch; Lx = soft-label CE on the
   labelled part, Lu = MSE of the probabilities on the unlabelled part, weighted by
   lambda_u ramped up linearly over 16 epochs after the warm-up (the reference's
   `linear_rampup(epoch + batch_idx / num_iter, warm_up)`), plus the uniform-prior penalty
   sum(prior * log(prior / mean prediction)).
Test prediction: the sum of both nets' logits (the reference's `outputs1 + outputs2`).

Where the reference is silent or hard-codes things, see `train_dividemix`'s docstring.
Every per-sample buffer is sized to the training subset (the reference's is 50,000).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ltsweep.augment import Normalize
from ltsweep.data.base import ImageSet
from ltsweep.device import autocast
from ltsweep.train.baselines.common import (
    CHECKPOINT,
    Backbone,
    Budget,
    Classifier,
    Outcome,
    TrainSet,
    Views,
    batch_bounds,
    build_networks,
    check_finite,
    epoch_lr,
    load_checkpoint,
    logits_of,
    make_optimizer,
    save_checkpoint,
    set_lr,
)


@dataclass(frozen=True)
class DivideMixParams:
    """DivideMix's settings resolved for one cell (data set and noise rate)."""

    warmup_epochs: int
    alpha: float = 4.0
    T: float = 0.5
    p_threshold: float = 0.5
    lambda_u: float = 25.0
    rampup_epochs: float = 16.0
    average_losses: bool = False
    average_losses_epochs: int = 5
    mix_batch_size: int = 64
    prior_penalty: bool = True
    ensemble: str = "logits"  # logits | softmax
    gmm_max_iter: int = 10
    gmm_tol: float = 1e-2
    gmm_reg_covar: float = 5e-4


# --- the pieces, each testable by hand ---------------------------------------------------


def normalise_losses(losses: torch.Tensor) -> torch.Tensor:
    """Min-max normalisation to [0, 1]; a constant vector becomes zeros (the reference divides by 0)."""
    span = losses.max() - losses.min()
    if span <= 0:
        return torch.zeros_like(losses)
    return (losses - losses.min()) / span


def clean_probability(losses: np.ndarray, params: DivideMixParams, random_state: int) -> np.ndarray:
    """Posterior of the low-mean component of a 2-component GMM fitted to `losses` (n,)."""
    from sklearn.mixture import GaussianMixture

    x = np.asarray(losses, dtype=np.float64).reshape(-1, 1)
    gmm = GaussianMixture(
        n_components=2,
        max_iter=params.gmm_max_iter,
        tol=params.gmm_tol,
        reg_covar=params.gmm_reg_covar,
        random_state=random_state,
    )
    gmm.fit(x)
    return gmm.predict_proba(x)[:, int(gmm.means_.argmin())]


def sharpen(p: torch.Tensor, T: float) -> torch.Tensor:
    """p ** (1 / T), renormalised over classes."""
    pt = p ** (1 / T)
    return pt / pt.sum(dim=1, keepdim=True)


def refine_labels(
    onehot: torch.Tensor, w: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, T: float
) -> torch.Tensor:
    """Label refinement: sharpen(w * y + (1 - w) * (p1 + p2) / 2) with w (B, 1) the clean probability."""
    return sharpen(w * onehot + (1 - w) * (p1 + p2) / 2, T)


def co_guess(probs: list[torch.Tensor], T: float) -> torch.Tensor:
    """Label co-guessing: sharpen the mean of both nets' predictions on both views."""
    return sharpen(torch.stack(probs).mean(0), T)


def mixmatch(
    inputs: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """lam * (x, y) + (1 - lam) * (x, y)[perm]; the caller makes lam >= 0.5."""
    return (
        lam * inputs + (1 - lam) * inputs[perm],
        lam * targets + (1 - lam) * targets[perm],
    )


def mix_lambda(alpha: float, gen: torch.Generator) -> float:
    """max(l, 1 - l), l ~ Beta(alpha, alpha), drawn reproducibly from the torch generator `gen`."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return max(lam, 1 - lam)


def linear_rampup(current: float, warmup: float, lambda_u: float, length: float = 16) -> float:
    """lambda_u * clip((current - warmup) / length, 0, 1), current = epoch + batch / num_iter."""
    return lambda_u * float(np.clip((current - warmup) / length, 0.0, 1.0))


def semi_loss(
    logits_x: torch.Tensor,
    targets_x: torch.Tensor,
    logits_u: torch.Tensor,
    targets_u: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lx = soft-label CE (mean over samples), Lu = mean squared error of the probabilities."""
    lx = -torch.mean(torch.sum(F.log_softmax(logits_x, dim=1) * targets_x, dim=1))
    if logits_u.shape[0] == 0:
        return lx, torch.zeros((), device=logits_x.device)
    lu = torch.mean((torch.softmax(logits_u, dim=1) - targets_u) ** 2)
    return lx, lu


def prior_penalty(logits: torch.Tensor) -> torch.Tensor:
    """sum_c prior_c log(prior_c / mean_b p_bc) with a uniform prior: KL(uniform || mean prediction)."""
    c = logits.shape[1]
    prior = torch.full((c,), 1.0 / c, device=logits.device)
    pred_mean = torch.softmax(logits, dim=1).mean(0)
    return torch.sum(prior * torch.log(prior / pred_mean))


def division_stats(pred: torch.Tensor, clean_mask: np.ndarray) -> tuple[float, float]:
    """(share judged clean, precision of that set against the true clean mask), averaged over nets.

    `pred` is (2, n) bool; precision of an empty set is NaN and left out of the average.
    """
    clean = torch.as_tensor(clean_mask, dtype=torch.bool)
    fractions, precisions = [], []
    for p in pred.bool().cpu():
        fractions.append(float(p.float().mean()))
        if p.any():
            precisions.append(float((p & clean).sum()) / float(p.sum()))
    frac = float(np.mean(fractions))
    prec = float(np.mean(precisions)) if precisions else math.nan
    return frac, prec


# --- training ----------------------------------------------------------------------------


@dataclass
class _State:
    epoch: int = 0
    seconds: float = 0.0
    history: list[float] | None = None
    loss_hist: torch.Tensor | None = None  # (2, k, n) last k normalised losses of each net
    prob: torch.Tensor | None = None  # (2, n) float64 clean probability of the last division
    divided: bool = False


@torch.no_grad()
def per_sample_losses(
    net: Classifier,
    train: TrainSet,
    normalize: Normalize,
    labels: torch.Tensor,
    device: torch.device,
    amp: bool,
) -> torch.Tensor:
    """CE of each training sample's noisy label, in eval mode, without augmentation."""
    logits = logits_of(net, train.pool, train.index, normalize, device, amp)
    return F.cross_entropy(logits, labels, reduction="none")


def _warmup_epoch(
    net: Classifier,
    opt: torch.optim.Optimizer,
    views: Views,
    labels: torch.Tensor,
    budget: Budget,
    order_gen: torch.Generator,
    device: torch.device,
    amp: bool,
) -> float:
    net.train()
    n = len(labels)
    bounds = batch_bounds(n, budget.batch_size)
    perm = torch.randperm(n, generator=order_gen)
    total = torch.zeros((), device=device)
    for s, e in bounds:
        pos = perm[s:e]
        x = views.augment(views.raw(pos.numpy()))
        with autocast(device, amp):
            logits = net(x).float()
        loss = F.cross_entropy(logits, labels[pos.to(device)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
    return float(total) / len(bounds)


def _train_epoch(
    net: Classifier,
    other: Classifier,
    opt: torch.optim.Optimizer,
    views: Views,
    labels: torch.Tensor,
    prob: torch.Tensor,
    params: DivideMixParams,
    epoch: int,
    num_classes: int,
    gens: tuple[torch.Generator, torch.Generator],
    device: torch.device,
    amp: bool,
) -> float:
    """One MixMatch epoch of `net` on the division given by `prob` (the other net's GMM)."""
    order_gen, mix_gen = gens
    net.train()
    other.eval()  # fix one network and train the other
    labelled = torch.nonzero(prob > params.p_threshold).flatten()
    unlabelled = torch.nonzero(prob <= params.p_threshold).flatten()
    mb = params.mix_batch_size
    lab_order = labelled[torch.randperm(len(labelled), generator=order_gen)]
    unl_order = unlabelled[torch.randperm(len(unlabelled), generator=order_gen)]
    u_ptr = 0
    num_iter = len(labelled) // mb + 1
    total, steps = torch.zeros((), device=device), 0
    for b, s in enumerate(range(0, len(labelled), mb)):
        pos_x = lab_order[s : s + mb]
        if len(unlabelled):
            if u_ptr >= len(unlabelled):  # the reference restarts the exhausted unlabelled loader
                unl_order = unlabelled[torch.randperm(len(unlabelled), generator=order_gen)]
                u_ptr = 0
            pos_u = unl_order[u_ptr : u_ptr + mb]
            u_ptr += mb
        else:
            pos_u = unlabelled[:0]
        bx, bu = len(pos_x), len(pos_u)
        raw_x, raw_u = views.raw(pos_x.numpy()), views.raw(pos_u.numpy())
        x1, x2 = views.augment(raw_x), views.augment(raw_x)
        u1, u2 = views.augment(raw_u), views.augment(raw_u)
        onehot = F.one_hot(labels[pos_x.to(device)], num_classes).float()
        w = prob[pos_x].to(device, torch.float32).view(-1, 1)

        with torch.no_grad(), autocast(device, amp):
            if bu:
                targets_u = co_guess(
                    [torch.softmax(m(u).float(), dim=1) for m in (net, other) for u in (u1, u2)],
                    params.T,
                )
            else:
                targets_u = torch.zeros(0, num_classes, device=device)
            targets_x = refine_labels(
                onehot,
                w,
                torch.softmax(net(x1).float(), dim=1),
                torch.softmax(net(x2).float(), dim=1),
                params.T,
            )

        lam = mix_lambda(params.alpha, mix_gen)
        all_inputs = torch.cat([x1, x2, u1, u2])
        all_targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
        perm = torch.randperm(len(all_inputs), generator=mix_gen).to(device)
        mixed_input, mixed_target = mixmatch(all_inputs, all_targets, lam, perm)
        with autocast(device, amp):
            logits = net(mixed_input).float()
        lx, lu = semi_loss(
            logits[: 2 * bx], mixed_target[: 2 * bx], logits[2 * bx :], mixed_target[2 * bx :]
        )
        weight = linear_rampup(
            epoch + b / num_iter, params.warmup_epochs, params.lambda_u, params.rampup_epochs
        )
        loss = lx + weight * lu
        if params.prior_penalty:
            loss = loss + prior_penalty(logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
        steps += 1
    return float(total) / max(1, steps)


def train_dividemix(
    train: TrainSet,
    test: ImageSet,
    backbone: Backbone,
    budget: Budget,
    params: DivideMixParams,
    device: torch.device,
    checkpoint_dir: Path,
    seed: int,
    checkpoint_every: int = 10,
    amp: bool = False,
    on_epoch: Callable[[int], None] | None = None,
    state_out: dict[str, torch.Tensor] | None = None,
) -> Outcome:
    """Train DivideMix for budget.epochs (warm-up included), resuming from checkpoint_dir/last.pt.

    Choices where the reference is silent or tied to its data loaders:
    - the GMM gets a fixed random_state (from seed, epoch and net): the reference leaves it
      to numpy's global RNG, which would make a resumed run differ;
    - a constant loss vector normalises to zeros (the reference would divide by zero);
    - an empty unlabelled set: MixMatch runs on the labelled part only, Lu = 0 (the
      reference's loader would fail); an empty labelled set: the net is not updated that
      epoch (the reference's loop over the labelled loader runs zero times);
    - loss averaging over the last `average_losses_epochs` epochs happens when
      params.average_losses (the reference does it at exactly 90 % noise).
    `state_out` (optional) receives the per-sample state after training, for tests.
    """
    nets = build_networks(backbone, train.num_classes, seed, 2, device)
    opts = [make_optimizer(net, budget) for net in nets]
    order_gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1)
    mix_gen = torch.Generator().manual_seed(seed + 2)
    n = len(train)
    st = _State(
        history=[], loss_hist=torch.zeros(2, 0, n), prob=torch.zeros(2, n, dtype=torch.float64)
    )
    ckpt = Path(checkpoint_dir) / CHECKPOINT
    blob = load_checkpoint(ckpt)
    if blob is not None:
        for net, opt, m, o in zip(nets, opts, blob["models"], blob["optimizers"], strict=True):
            net.load_state_dict(m)
            opt.load_state_dict(o)
        order_gen.set_state(blob["order_gen"])
        aug_gen.set_state(blob["aug_gen"])
        mix_gen.set_state(blob["mix_gen"])
        st = _State(
            epoch=int(blob["epoch"]),
            seconds=float(blob["seconds"]),
            history=list(blob["history"]),
            loss_hist=blob["loss_hist"],
            prob=blob["prob"],
            divided=bool(blob["divided"]),
        )

    views = Views(train, budget, device, aug_gen)
    normalize = Normalize(train.mean, train.std, device)
    labels = torch.as_tensor(train.labels, dtype=torch.long, device=device)
    while st.epoch < budget.epochs:
        t0 = time.perf_counter()
        epoch = st.epoch  # 0-based index of the epoch being trained, as in the reference
        for opt in opts:
            set_lr(opt, epoch_lr(budget, epoch))
        if epoch < params.warmup_epochs:
            losses = [
                _warmup_epoch(net, opt, views, labels, budget, order_gen, device, amp)
                for net, opt in zip(nets, opts, strict=True)
            ]
        else:
            fresh = torch.stack(
                [
                    normalise_losses(
                        per_sample_losses(net, train, normalize, labels, device, amp)
                    ).cpu()
                    for net in nets
                ]
            )
            keep = params.average_losses_epochs
            st.loss_hist = torch.cat([st.loss_hist, fresh[:, None]], dim=1)[:, -keep:]
            gmm_input = st.loss_hist.mean(1) if params.average_losses else fresh
            st.prob = torch.stack(
                [
                    torch.from_numpy(
                        clean_probability(
                            gmm_input[i].double().numpy(),
                            params,
                            random_state=(seed * 100_003 + epoch * 2 + i) % 2**32,
                        )
                    )
                    for i in range(2)
                ]
            )
            st.divided = True
            losses = [
                _train_epoch(
                    nets[i],
                    nets[1 - i],
                    opts[i],
                    views,
                    labels,
                    st.prob[1 - i],  # co-divide: net i learns from the other net's division
                    params,
                    epoch,
                    train.num_classes,
                    (order_gen, mix_gen),
                    device,
                    amp,
                )
                for i in range(2)
            ]
        st.epoch += 1
        st.history.append(float(np.mean(losses)))
        check_finite(st.history[-1], "DivideMix loss", st.epoch)
        st.seconds += time.perf_counter() - t0
        if st.epoch % checkpoint_every == 0 or st.epoch == budget.epochs:
            save_checkpoint(
                ckpt,
                {
                    "models": [net.state_dict() for net in nets],
                    "optimizers": [opt.state_dict() for opt in opts],
                    "epoch": st.epoch,
                    "seconds": st.seconds,
                    "history": st.history,
                    "loss_hist": st.loss_hist,
                    "prob": st.prob,
                    "divided": st.divided,
                    "order_gen": order_gen.get_state(),
                    "aug_gen": aug_gen.get_state(),
                    "mix_gen": mix_gen.get_state(),
                },
            )
        if on_epoch is not None:
            on_epoch(st.epoch)

    outs = [logits_of(net, test, np.arange(len(test)), normalize, device, amp) for net in nets]
    if params.ensemble == "softmax":
        outs = [torch.softmax(o, dim=1) for o in outs]
    extra = {"clean_fraction": math.nan, "clean_precision": math.nan}
    if st.divided:
        frac, prec = division_stats(st.prob > params.p_threshold, train.labels == train.clean)
        extra = {"clean_fraction": frac, "clean_precision": prec}
    if state_out is not None:
        state_out.update(
            {"loss_hist": st.loss_hist, "prob": st.prob}
            | {f"net{i}.{k}": v for i, net in enumerate(nets) for k, v in net.state_dict().items()}
        )
    return Outcome((outs[0] + outs[1]).cpu(), st.epoch, st.seconds, st.history, extra)
