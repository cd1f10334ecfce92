"""SimCLR-style views computed batched on the model's device.

Random resized crop and horizontal flip are one affine warp per image (`affine_grid` +
`grid_sample`), colour jitter, grayscale and solarisation are per-image tensor arithmetic,
Gaussian blur is one separable grouped convolution with a per-image sigma: a whole batch
is augmented in a handful of kernels, so a GPU worker is never starved by CPU-side PIL work.
All randomness comes from an explicit `torch.Generator`, whose state a checkpoint saves.
Jitter is applied in a fixed order (brightness, contrast, saturation, hue) rather than
torchvision's random order; hue is a rotation of the chroma plane in YIQ space. The order
of the operations is solo-learn's: crop (+ flip), jitter, grayscale, blur, solarisation.
Each method's recipe is its settings' `augment` default (`ltsweep.sweep.ssl_settings`); the
two views may differ (BYOL's and Barlow Twins' asymmetric solarisation and blur). An
operation whose probability is 0 draws nothing from the generator.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F


class ViewRecipe(Protocol):
    """What the views read of a recipe: `ltsweep.sweep.ssl_settings.AugmentSettings` has these
    fields (stated here so that the building blocks, and the trainers above them, import
    nothing of the sweep layer)."""

    crop_scale_min: float
    flip_p: float
    jitter_p: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    grayscale_p: float
    solarize_p: tuple[float, float]  # per view
    blur_sigma: tuple[float, float]

    def blur_p_at(self, size: int) -> tuple[float, float]: ...


_GRAY = torch.tensor([0.299, 0.587, 0.114])
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_HOST_CONSTANTS = {"gray": _GRAY, "rgb2yiq": _RGB2YIQ, "yiq2rgb": torch.linalg.inv(_RGB2YIQ)}
#: (what, device, dtype) -> the constant there: one host-to-device copy per device, not per step
_ON_DEVICE: dict[tuple[object, torch.device, torch.dtype], torch.Tensor] = {}


def _cached(key: tuple[object, torch.device, torch.dtype], make) -> torch.Tensor:
    c = _ON_DEVICE.get(key)
    if c is None:
        c = make()
        if type(c) is torch.Tensor:  # never keep a fake (FakeTensorMode) or other subclass
            _ON_DEVICE[key] = c
    return c


def device_constant(
    values: tuple[float, ...] | str, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A small constant on `device`, copied there once per (values, device, dtype) and kept:
    a step that rebuilt it would make a blocking host-to-device copy each time on a GPU.
    `values`: numbers, or the name of one of this module's colour matrices. Read-only."""
    if isinstance(values, str):
        host = _HOST_CONSTANTS[values]
        return _cached((values, device, dtype), lambda: host.to(device, dtype))
    values = tuple(float(v) for v in values)
    return _cached((values, device, dtype), lambda: torch.tensor(values, dtype=dtype).to(device))


def _uniform(
    n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo


def random_resized_crop_flip(
    x: torch.Tensor,
    scale_min: float,
    flip_p: float,
    gen: torch.Generator,
    out_size: int | None = None,
) -> torch.Tensor:
    """A random crop (area scale_min..1 of the input, aspect 3/4..4/3) resized to `out_size`
    (default: the input's size), flipped horizontally with probability `flip_p`."""
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
    shape = list(x.shape) if out_size is None else [n, x.shape[1], out_size, out_size]
    grid = F.affine_grid(theta, shape, align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("nchw,c->nhw", x, device_constant("gray", x.device, x.dtype))[:, None]


def color_jitter(x: torch.Tensor, s: ViewRecipe, gen: torch.Generator) -> torch.Tensor:
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
    yiq = torch.einsum("ij,njhw->nihw", device_constant("rgb2yiq", dev, x.dtype), y)
    cos, sin = torch.cos(hue).view(n, 1, 1), torch.sin(hue).view(n, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], dim=1)
    yiq2rgb = device_constant("yiq2rgb", dev, x.dtype)
    y = torch.einsum("ij,njhw->nihw", yiq2rgb, yiq).clamp(0, 1)
    return torch.where(apply, y, x)


def random_grayscale(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    apply = (torch.rand(n, generator=gen, device=x.device) < p).view(n, 1, 1, 1)
    return torch.where(apply, _gray(x).expand_as(x), x)


def solarize(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """With probability p per image, invert the pixels >= 128 / 255 (PIL's ImageOps.solarize)."""
    if p <= 0:
        return x
    n = x.shape[0]
    apply = (torch.rand(n, generator=gen, device=x.device) < p).view(n, 1, 1, 1)
    return torch.where(apply & (x >= 128 / 255), 1 - x, x)


def blur_kernel_size(size: int) -> int:
    """An odd kernel of about 10 % of the image side (23 at 224, as SimCLR's and BYOL's)."""
    k = max(3, int(round(0.1 * size)))
    return k if k % 2 else k + 1


def gaussian_blur(
    x: torch.Tensor, p: float, sigma: tuple[float, float], gen: torch.Generator
) -> torch.Tensor:
    """With probability p per image, a Gaussian blur of sigma ~ U(sigma) pixels (reflect padding)."""
    if p <= 0:
        return x
    n, c, h, w = x.shape
    dev = x.device
    apply = (torch.rand(n, generator=gen, device=dev) < p).view(n, 1, 1, 1)
    sig = _uniform(n, sigma[0], sigma[1], gen, dev)
    k = blur_kernel_size(min(h, w))
    r = torch.arange(k, device=dev, dtype=x.dtype) - (k - 1) / 2
    kern = torch.exp(-(r[None] ** 2) / (2 * sig[:, None].to(x.dtype) ** 2))
    kern = (kern / kern.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n*c, k)
    y = F.pad(x.reshape(1, n * c, h, w), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, kern.view(n * c, 1, k, 1), groups=n * c)
    y = F.conv2d(y, kern.view(n * c, 1, 1, k), groups=n * c).view(n, c, h, w)
    return torch.where(apply, y, x)


class Normalize:
    """uint8 NCHW -> float NCHW standardised with the data set's mean and std (kept on the
    device once per process: building one per epoch or per evaluation copies nothing)."""

    def __init__(
        self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
    ) -> None:
        self.mean = device_constant(tuple(mean), device).view(1, 3, 1, 1)
        self.std = device_constant(tuple(std), device).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self.mean) / self.std


def two_views(
    images: torch.Tensor,
    settings: ViewRecipe,
    gen: torch.Generator,
    out_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views in [0, 1] of a uint8 batch (already on the device).

    `out_size`: the views' side (default: the input's); Clothing1M crops 224-pixel views out
    of 256-pixel images.
    """
    x = images.float().div_(255)
    return view(x, settings, gen, 0, out_size), view(x, settings, gen, 1, out_size)


def view(
    x: torch.Tensor,
    s: ViewRecipe,
    gen: torch.Generator,
    which: int = 0,
    out_size: int | None = None,
) -> torch.Tensor:
    """View `which` (0 or 1: the recipe's per-view solarisation and blur) of a float batch."""
    x = random_resized_crop_flip(x, s.crop_scale_min, s.flip_p, gen, out_size)
    x = color_jitter(x, s, gen)
    x = random_grayscale(x, s.grayscale_p, gen)
    x = gaussian_blur(x, s.blur_p_at(x.shape[-1])[which], s.blur_sigma, gen)
    return solarize(x, s.solarize_p[which], gen)
