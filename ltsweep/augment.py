"""SimCLR-style views computed batched on the model's device.

Random resized crop and horizontal flip are one affine warp per image (`affine_grid` +
`grid_sample`), colour jitter and grayscale are per-image tensor arithmetic: a whole batch
is augmented in a handful of kernels, so a GPU worker is never starved by CPU-side PIL work.
All randomness comes from an explicit `torch.Generator`, whose state a checkpoint saves.
Jitter is applied in a fixed order (brightness, contrast, saturation, hue) rather than
torchvision's random order; hue is a rotation of the chroma plane in YIQ space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ltsweep.sweep.ssl_settings import AugmentSettings

_GRAY = torch.tensor([0.299, 0.587, 0.114])
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _uniform(
    n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo


def random_resized_crop_flip(
    x: torch.Tensor, scale_min: float, flip_p: float, gen: torch.Generator
) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    area = _uniform(n, scale_min, 1.0, gen, dev)
    log_ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), gen, dev)
    ratio = torch.exp(log_ratio)
    w = torch.clamp(torch.sqrt(area * ratio), max=1.0)
    h = torch.clamp(torch.sqrt(area / ratio), max=1.0)
    cx = (torch.rand(n, generator=gen, device=dev) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen, device=dev) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=gen, device=dev) < flip_p, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("nchw,c->nhw", x, _GRAY.to(x.device, x.dtype))[:, None]


def color_jitter(x: torch.Tensor, s: AugmentSettings, gen: torch.Generator) -> torch.Tensor:
    n, dev = x.shape[0], x.device
    apply = (torch.rand(n, generator=gen, device=dev) < s.jitter_p).view(n, 1, 1, 1)
    b = _uniform(n, max(0.0, 1 - s.brightness), 1 + s.brightness, gen, dev).view(n, 1, 1, 1)
    c = _uniform(n, max(0.0, 1 - s.contrast), 1 + s.contrast, gen, dev).view(n, 1, 1, 1)
    sat = _uniform(n, max(0.0, 1 - s.saturation), 1 + s.saturation, gen, dev).view(n, 1, 1, 1)
    hue = _uniform(n, -s.hue, s.hue, gen, dev) * 2 * math.pi
    y = (x * b).clamp(0, 1)
    mean = _gray(y).mean(dim=(2, 3), keepdim=True)
    y = ((y - mean) * c + mean).clamp(0, 1)
    g = _gray(y)
    y = ((y - g) * sat + g).clamp(0, 1)
    yiq = torch.einsum("ij,njhw->nihw", _RGB2YIQ.to(dev, x.dtype), y)
    cos, sin = torch.cos(hue).view(n, 1, 1), torch.sin(hue).view(n, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], dim=1)
    y = torch.einsum("ij,njhw->nihw", torch.linalg.inv(_RGB2YIQ).to(dev, x.dtype), yiq).clamp(0, 1)
    return torch.where(apply, y, x)


def random_grayscale(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    apply = (torch.rand(n, generator=gen, device=x.device) < p).view(n, 1, 1, 1)
    return torch.where(apply, _gray(x).expand_as(x), x)


class Normalize:
    """uint8 NCHW -> float NCHW standardised with the data set's mean and std."""

    def __init__(
        self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
    ) -> None:
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self.mean) / self.std


def two_views(
    images: torch.Tensor, settings: AugmentSettings, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views in [0, 1] of a uint8 batch (already on the device)."""
    x = images.float().div_(255)
    return view(x, settings, gen), view(x, settings, gen)


def view(x: torch.Tensor, s: AugmentSettings, gen: torch.Generator) -> torch.Tensor:
    x = random_resized_crop_flip(x, s.crop_scale_min, s.flip_p, gen)
    x = color_jitter(x, s, gen)
    return random_grayscale(x, s.grayscale_p, gen)
