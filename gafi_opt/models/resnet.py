"""CIFAR-style ResNet-20 (He et al., 2016, section 4.2) at the widths used in the GaFi paper.

Three stages of three basic blocks (two 3x3 conv + BN, ReLU after the sum), with
`width`, `2 * width` and `4 * width` channels (64/128/256 by default, wider than the
original 16/32/64), stride 2 at the first block of stages 2 and 3, then global average
pooling and a linear layer. Shortcuts are "option A": parameter-free identity, with
spatial subsampling and zero-padded channels where the shape changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ShortcutA(nn.Module):
    """Identity shortcut that subsamples x[:, :, ::stride, ::stride] and zero-pads channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option-A shortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.stride = stride
        self.pad_front = (out_channels - in_channels) // 2
        self.pad_back = out_channels - in_channels - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_front or self.pad_back:
            x = F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))
        return x


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = ShortcutA(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 64, blocks_per_stage: int = 3):
        super().__init__()
        if width < 1 or blocks_per_stage < 1:
            raise ValueError(f"resnet needs width >= 1 and blocks_per_stage >= 1, got {width} and {blocks_per_stage}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages = []
        channels = width
        for index, out_channels in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stages(self.stem(x))))


def resnet20(in_channels: int, num_classes: int, width: int = 64) -> ResNet:
    """ResNet-20 (3 x 3 basic blocks, 6n+2 = 20 weighted layers) for 8x8 to 32x32 inputs."""
    return ResNet(in_channels, num_classes, width=width, blocks_per_stage=3)
