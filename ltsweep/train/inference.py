"""Forward passes in eval mode over a set of images, in batches, without gradients.

One loop serves the frozen features of an encoder (the pre-train's kNN monitor and feature
cache: `on_cpu`, gathered batch by batch on the host) and the logits of a baseline's network
(its per-sample losses and test predictions: kept on the device). The network's train/eval
mode is restored afterwards.
"""

from __future__ import annotations

import numpy as np
import torch

from ltsweep.augment import Normalize
from ltsweep.data.base import ImageSet
from ltsweep.device import Speed, autocast, legacy_speed, to_device


@torch.no_grad()
def forward_eval(
    net: torch.nn.Module,
    images: ImageSet,
    index: np.ndarray,
    normalize: Normalize,
    device: torch.device,
    speed: Speed | bool = False,
    batch_size: int = 512,
    on_cpu: bool = True,
) -> torch.Tensor:
    """`net` on the un-augmented `images[index]` in eval mode, float32, on the CPU if `on_cpu`.

    `speed`: the precision and memory format of the forward (a bool: the older `amp` flag).
    """
    if isinstance(speed, bool):
        speed = legacy_speed(device, speed)
    was_training = net.training
    net.eval()
    out = []
    for s in range(0, len(index), batch_size):
        x = normalize(to_device(images.images(index[s : s + batch_size]), device))
        x = speed.input(x)
        with autocast(device, speed):
            y = net(x).float()
        out.append(y.cpu() if on_cpu else y)
    net.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
