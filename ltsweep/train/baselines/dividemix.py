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
Learning rate: the reference's step, lr / 10 from `lr_decay_epoch` (150 of its 300 epochs),
or the shared schedule when that is None.

Where the reference is silent or hard-codes things, see `train_dividemix`'s docstring.
Every per-sample buffer is sized to the training subset (the reference's is 50,000).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ltsweep.augment import Normalize
from ltsweep.data.base import ImageSet
from ltsweep.device import autocast
from ltsweep.train.baselines.common import Budget, Outcome
from ltsweep.train.baselines.loop import Method, Training, cross_entropy, fit, supervised_epoch
from ltsweep.train.inference import forward_eval


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
    #: Train_cifar.py's schedule: lr / 10 from this epoch; None: the shared budget's schedule
    lr_decay_epoch: int | None = None


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


def per_sample_losses(t: Training, net: torch.nn.Module) -> torch.Tensor:
    """CE of each training sample's noisy label, in eval mode, without augmentation."""
    normalize = Normalize(t.train.mean, t.train.std, t.device)
    logits = forward_eval(
        net, t.train.pool, t.train.index, normalize, t.device, t.amp, on_cpu=False
    )
    return F.cross_entropy(logits, t.labels, reduction="none")


def mixmatch_epoch(
    t: Training, i: int, prob: torch.Tensor, params: DivideMixParams, epoch: int
) -> float:
    """One MixMatch epoch of net `i` on the division given by `prob` (the other net's GMM)."""
    net, other, opt, views = t.nets[i], t.nets[1 - i], t.opts[i], t.views
    order_gen, mix_gen = t.gens["order_gen"], t.gens["mix_gen"]
    labels, device, amp, num_classes = t.labels, t.device, t.amp, t.train.num_classes
    net.train()
    other.eval()  # fix one network and train the other
    labelled = torch.nonzero(prob > params.p_threshold).flatten()
    unlabelled = torch.nonzero(prob <= params.p_threshold).flatten()
    mb = params.mix_batch_size
    lab_order = labelled[torch.randperm(len(labelled), generator=order_gen)]
    unl_order = unlabelled[torch.randperm(len(unlabelled), generator=order_gen)]
    u_ptr = 0
    num_iter = len(labelled) // mb + 1
    # The epoch's plan: each step's labelled and unlabelled positions (order_gen) and mixup
    # draws (mix_gen), drawn in the order the steps use them. The positions and permutations
    # reach the device in one copy per epoch, the clean probabilities in another: a step
    # copies its images at most, labelled and unlabelled in one batch.
    plan: list[tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]] = []
    for s in range(0, len(labelled), mb):
        pos_x = lab_order[s : s + mb]
        if len(unlabelled):
            if u_ptr >= len(unlabelled):  # the reference restarts the exhausted unlabelled loader
                unl_order = unlabelled[torch.randperm(len(unlabelled), generator=order_gen)]
                u_ptr = 0
            pos_u = unl_order[u_ptr : u_ptr + mb]
            u_ptr += mb
        else:
            pos_u = unlabelled[:0]
        lam = mix_lambda(params.alpha, mix_gen)
        perm = torch.randperm(2 * (len(pos_x) + len(pos_u)), generator=mix_gen)
        plan.append((pos_x, pos_u, lam, perm))
    if not plan:
        return 0.0
    pieces = [p for pos_x, pos_u, _, perm in plan for p in (torch.cat([pos_x, pos_u]), perm)]
    on_device = torch.cat(pieces).to(device).split([len(p) for p in pieces])
    w_all = prob.to(device, torch.float32)
    total, steps = torch.zeros((), device=device), 0
    for b, (pos_x, pos_u, lam, _) in enumerate(plan):
        bx, bu = len(pos_x), len(pos_u)
        pos_dev, perm = on_device[2 * b], on_device[2 * b + 1]
        then = torch.cat(plan[b + 1][:2]) if b + 1 < len(plan) else None
        raw = views.raw(torch.cat([pos_x, pos_u]), pos_dev, then)
        raw_x, raw_u = raw[:bx], raw[bx:]
        x1, x2 = views.augment(raw_x), views.augment(raw_x)
        u1, u2 = views.augment(raw_u), views.augment(raw_u)
        onehot = F.one_hot(labels[pos_dev[:bx]], num_classes).float()
        w = w_all[pos_dev[:bx]].view(-1, 1)

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

        all_inputs = torch.cat([x1, x2, u1, u2])
        all_targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
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
        t.step(opt, loss)  # through the loss scaler (fp16)
        total += loss.detach()
        steps += 1
    return float(total) / max(1, steps)


class DivideMix(Method):
    """Two networks: CE warm-up, then each epoch a co-divide and a MixMatch epoch per network.

    Its checkpointed state: the last normalised per-sample losses of each network
    (`loss_hist`, (2, k, n)), the clean probabilities of the last division (`prob`, (2, n))
    and whether a division happened yet (`divided`).
    """

    networks = 2
    what = "DivideMix loss"

    def __init__(self, params: DivideMixParams, state_out: dict[str, Any] | None = None) -> None:
        self.params, self.state_out = params, state_out
        self.divided = False

    def generators(self, seed: int) -> dict[str, torch.Generator]:
        return {"mix_gen": torch.Generator().manual_seed(seed + 2)}

    def start(self, t: Training) -> None:
        n = len(t.train)
        self.loss_hist = torch.zeros(2, 0, n)
        self.prob = torch.zeros(2, n, dtype=torch.float64)

    def epoch_lr(self, budget: Budget, epoch: int) -> float:
        if self.params.lr_decay_epoch is None:
            return super().epoch_lr(budget, epoch)
        return budget.lr * (0.1 if epoch >= self.params.lr_decay_epoch else 1.0)

    def train_epoch(self, t: Training, epoch: int) -> float:
        if epoch < self.params.warmup_epochs:
            ce = cross_entropy(t)
            losses = [
                supervised_epoch(t, net, opt, ce) for net, opt in zip(t.nets, t.opts, strict=True)
            ]
        else:
            self.divide(t, epoch)
            losses = [  # co-divide: net i learns from the other net's division
                mixmatch_epoch(t, i, self.prob[1 - i], self.params, epoch) for i in range(2)
            ]
        return float(np.mean(losses))

    def divide(self, t: Training, epoch: int) -> None:
        """Fit each network's GMM to its (averaged) normalised per-sample losses."""
        fresh = torch.stack([normalise_losses(per_sample_losses(t, net)).cpu() for net in t.nets])
        keep = self.params.average_losses_epochs
        self.loss_hist = torch.cat([self.loss_hist, fresh[:, None]], dim=1)[:, -keep:]
        gmm_input = self.loss_hist.mean(1) if self.params.average_losses else fresh
        self.prob = torch.stack(
            [
                torch.from_numpy(
                    clean_probability(
                        gmm_input[i].double().numpy(),
                        self.params,
                        random_state=(t.seed * 100_003 + epoch * 2 + i) % 2**32,
                    )
                )
                for i in range(2)
            ]
        )
        self.divided = True

    def state(self) -> dict[str, Any]:
        return {"loss_hist": self.loss_hist, "prob": self.prob, "divided": self.divided}

    def load_state(self, blob: dict[str, Any]) -> None:
        self.loss_hist, self.prob = blob["loss_hist"], blob["prob"]
        self.divided = bool(blob["divided"])

    def predict(self, t: Training, test: ImageSet) -> tuple[torch.Tensor, dict[str, float]]:
        outs = [t.test_logits(net, test) for net in t.nets]
        if self.params.ensemble == "softmax":
            outs = [torch.softmax(o, dim=1) for o in outs]
        extra = {"clean_fraction": math.nan, "clean_precision": math.nan}
        if self.divided:
            clean = t.train.labels == t.train.clean
            frac, prec = division_stats(self.prob > self.params.p_threshold, clean)
            extra = {"clean_fraction": frac, "clean_precision": prec}
        if self.state_out is not None:
            self.state_out.update(
                {"loss_hist": self.loss_hist, "prob": self.prob}
                | {
                    f"net{i}.{k}": v
                    for i, net in enumerate(t.nets)
                    for k, v in net.state_dict().items()
                }
            )
        return outs[0] + outs[1], extra


def train_dividemix(
    train, test, backbone, budget, params: DivideMixParams, *rest, state_out=None, **opts
) -> Outcome:
    """Train DivideMix for budget.epochs (warm-up included), resuming from checkpoint_dir/last.pt.

    The other arguments are `fit`'s, in its order (see `train_supervised`). Choices where the
    reference is silent or tied to its data loaders:
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
    return fit(DivideMix(params, state_out), train, test, backbone, budget, *rest, **opts)
