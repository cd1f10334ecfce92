"""Small MLP heads of the SSL methods, one composable piece each.

The first layer of every projection head is a `Linear -> BatchNorm1d -> ReLU` block; the
fine-tuning stage starts from that block (SimCLRv2-style "fine-tune from the middle of the
projection head"), which is why `first_block_state` exposes it by name.
"""

from __future__ import annotations

import torch
from torch import nn


def mlp(dims: list[int], last_bn: bool = False, last_bn_affine: bool = True) -> nn.Sequential:
    """Linear-BN-ReLU blocks between `dims`; the last Linear is followed only by an optional BN."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        last = i == len(dims) - 2
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=not (not last or last_bn)))
        if not last:
            layers += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=last_bn_affine))
    return nn.Sequential(*layers)


def first_block_state(head: nn.Sequential) -> dict[str, torch.Tensor]:
    """The Linear + BatchNorm1d that open `head`, as plain tensors for the fine-tune head."""
    linear, bn = head[0], head[1]
    assert isinstance(linear, nn.Linear) and isinstance(bn, nn.BatchNorm1d)
    bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
    return {
        "w1": linear.weight.detach().clone(),
        "b1": bias.detach().clone(),
        "bn_weight": bn.weight.detach().clone(),
        "bn_bias": bn.bias.detach().clone(),
        "bn_mean": bn.running_mean.detach().clone(),
        "bn_var": bn.running_var.detach().clone(),
    }
