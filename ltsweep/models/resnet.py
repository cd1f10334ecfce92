"""ResNet18 with a width setting and the two stems the paper uses.

CIFAR stem: a 3x3 stride-1 first conv and no max-pool (32x32 inputs keep their resolution);
ImageNet stem: 7x7 stride-2 conv + max-pool (Clothing1M at 224). `width` is the channel count
of the first stage (64 = the standard network); a narrow network lets tests and the smoke
sweep run the real architecture on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """Encoder only: images -> pooled features of size `feat_dim` (8 * width)."""

    def __init__(self, width: int = 64, stem: str = "cifar") -> None:
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 3, 1, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
        elif stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            raise ValueError(f"unknown stem {stem!r} (expected 'cifar' or 'imagenet')")
        layers, cin = [], width
        for i, (blocks, stride) in enumerate([(2, 1), (2, 2), (2, 2), (2, 2)]):
            cout = width * 2**i
            for b in range(blocks):
                layers.append(BasicBlock(cin, cout, stride if b == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.feat_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def build_encoder(arch: str = "resnet18", width: int = 64, stem: str = "cifar") -> ResNet18:
    if arch != "resnet18":
        raise ValueError(f"unknown backbone {arch!r}")
    return ResNet18(width=width, stem=stem)
