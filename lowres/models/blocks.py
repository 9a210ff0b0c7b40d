"""Inception-v3 building blocks with a width multiplier.

Layer names follow torchvision's ``models/inception.py`` so that torchvision and timm state dicts load
unchanged. Every convolution's channel count goes through ``depth`` (TF-slim's ``depth_multiplier`` with
``min_depth``), so width 1.0 is the paper's network exactly and width 0.5 halves every convolution.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Depth = Callable[[int], int]


def make_depth(width: float, min_depth: int) -> Depth:
    """TF-slim's rule: ``max(int(c * width), min_depth)`` for every convolution's output channels."""
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}")
    if min_depth < 1:
        raise ValueError(f"min_depth must be at least 1, got {min_depth}")
    return lambda channels: max(int(channels * width), min_depth)


class BasicConv2d(nn.Module):
    """Convolution (no bias), BatchNorm (eps 0.001, as in TF and torchvision), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionA(nn.Module):
    """35x35 module (paper figure 5): 1x1, 5x5, double 3x3 and pooled branches; keeps the grid."""

    def __init__(self, in_channels: int, pool_features: int, depth: Depth) -> None:
        super().__init__()
        d = depth
        self.branch1x1 = BasicConv2d(in_channels, d(64), kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, d(48), kernel_size=1)
        self.branch5x5_2 = BasicConv2d(d(48), d(64), kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, d(64), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(d(64), d(96), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(d(96), d(96), kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, d(pool_features), kernel_size=1)
        self.out_channels = d(64) + d(64) + d(96) + d(pool_features)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (paper figure 10): strided convolutions beside a max-pool."""

    def __init__(self, in_channels: int, depth: Depth) -> None:
        super().__init__()
        d = depth
        self.branch3x3 = BasicConv2d(in_channels, d(384), kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, d(64), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(d(64), d(96), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(d(96), d(96), kernel_size=3, stride=2)
        self.out_channels = d(384) + d(96) + in_channels

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        b3d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b3d, bp], 1)


class InceptionC(nn.Module):
    """17x17 module with 7x7 convolutions factorised into 1x7 and 7x1 (paper figure 6)."""

    def __init__(self, in_channels: int, channels_7x7: int, depth: Depth) -> None:
        super().__init__()
        d, c7 = depth, depth(channels_7x7)
        self.branch1x1 = BasicConv2d(in_channels, d(192), kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, d(192), kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, d(192), kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, d(192), kernel_size=1)
        self.out_channels = 4 * d(192)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7d = layer(b7d)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b7, b7d, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: strided 3x3 convolutions beside a max-pool."""

    def __init__(self, in_channels: int, depth: Depth) -> None:
        super().__init__()
        d = depth
        self.branch3x3_1 = BasicConv2d(in_channels, d(192), kernel_size=1)
        self.branch3x3_2 = BasicConv2d(d(192), d(320), kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, d(192), kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(d(192), d(192), kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(d(192), d(192), kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(d(192), d(192), kernel_size=3, stride=2)
        self.out_channels = d(320) + d(192) + in_channels

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """8x8 module with expanded filter banks (paper figure 7): 1x3 and 3x1 outputs concatenated."""

    def __init__(self, in_channels: int, depth: Depth) -> None:
        super().__init__()
        d = depth
        self.branch1x1 = BasicConv2d(in_channels, d(320), kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, d(384), kernel_size=1)
        self.branch3x3_2a = BasicConv2d(d(384), d(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(d(384), d(384), kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, d(448), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(d(448), d(384), kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(d(384), d(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(d(384), d(384), kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, d(192), kernel_size=1)
        self.out_channels = d(320) + 4 * d(384) + d(192)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b3, b3d, bp], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on Mixed_6e, "BN-auxiliary" (paper section 10 and Table 3).

    The paper: "BN-auxiliary refers to the version in which the fully connected layer of the auxiliary
    classifier is also batch-normalized, not just the convolutions." So, beside torchvision's layers
    (``conv0``, ``conv1``, ``fc``), ``fc_bn`` normalises the fully connected layer's output the way every
    convolution's output is normalised. It is the one layer a torchvision or timm state dict lacks; at its
    initial values (running mean 0, variance 1, affine identity) it is close to identity in eval mode.
    """

    def __init__(self, in_channels: int, num_classes: int, depth: Depth) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, depth(128), kernel_size=1)
        self.conv1 = BasicConv2d(depth(128), depth(768), kernel_size=5)
        self.conv1.stddev = 0.01  # TF-slim's initialiser for this layer
        self.fc = nn.Linear(depth(768), num_classes)
        self.fc.stddev = 0.001
        self.fc_bn = nn.BatchNorm1d(num_classes, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        # N x C x 17 x 17
        x = F.avg_pool2d(x, kernel_size=5, stride=3)
        # N x C x 5 x 5
        x = self.conv1(self.conv0(x))
        # N x 768w x 1 x 1
        x = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        return self.fc_bn(self.fc(x))
