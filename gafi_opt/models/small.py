"""Compact models for small images: a CNN classifier and conditional MLP / DCGAN-style GANs.

Every generator here maps (z, y) to images in [-1, 1] and exposes `latent_dim` and
`num_classes`; every discriminator maps (x, y) to one logit per image through a
projection head (Miyato & Koyama, 2018).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class SmallCNN(nn.Module):
    """Two conv stages and a linear head; fast enough for CPU trials on 8x8 to 32x32 images."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.features = nn.Sequential(
            block(in_channels, width),
            block(width, width),
            nn.MaxPool2d(2),
            block(width, 2 * width),
            block(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ProjectionHead(nn.Module):
    """logit = w . h + <embed(y), h>: the class-conditional projection discriminator output."""

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.linear = spectral_norm(nn.Linear(features, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, features))

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


class MLPGenerator(nn.Module):
    def __init__(self, latent_dim: int, num_classes: int, image_shape: tuple[int, int, int], width: int = 128):
        super().__init__()
        self.latent_dim, self.num_classes, self.image_shape = latent_dim, num_classes, tuple(image_shape)
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.net = nn.Sequential(
            nn.Linear(2 * latent_dim, 2 * width),
            nn.BatchNorm1d(2 * width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(2 * width, 4 * width),
            nn.BatchNorm1d(4 * width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(4 * width, math.prod(image_shape)),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.net(torch.cat([z, self.embed(y)], dim=1))
        return out.view(-1, *self.image_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], width: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            spectral_norm(nn.Linear(math.prod(image_shape), 4 * width)),
            nn.LeakyReLU(0.2, inplace=True),
            spectral_norm(nn.Linear(4 * width, 2 * width)),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.head = ProjectionHead(2 * width, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x), y)


class DCGANGenerator(nn.Module):
    """Linear projection to (size/4)^2 maps, then two x2 transposed-conv upsamplings."""

    def __init__(self, latent_dim: int, num_classes: int, image_shape: tuple[int, int, int], width: int = 64):
        super().__init__()
        channels, height, img_width = image_shape
        if height != img_width or height % 4:
            raise ValueError(f"dcgan needs square images with a side divisible by 4, got {height}x{img_width}")
        self.latent_dim, self.num_classes, self.image_shape = latent_dim, num_classes, tuple(image_shape)
        self.base = height // 4
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.project = nn.Sequential(
            nn.Linear(2 * latent_dim, 4 * width * self.base * self.base, bias=False),
            nn.BatchNorm1d(4 * width * self.base * self.base),
            nn.ReLU(inplace=True),
        )
        self.width = width
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, channels, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(y)], dim=1))
        return self.up(h.view(-1, 4 * self.width, self.base, self.base))


class DCGANDiscriminator(nn.Module):
    def __init__(self, num_classes: int, image_shape: tuple[int, int, int], width: int = 64):
        super().__init__()
        channels = image_shape[0]
        self.body = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, width, 3, padding=1)),
            nn.LeakyReLU(0.1, inplace=True),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.1, inplace=True),
            spectral_norm(nn.Conv2d(2 * width, 4 * width, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.1, inplace=True),
        )
        self.head = ProjectionHead(4 * width, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(x).sum(dim=(2, 3))  # global sum pooling, as in SNGAN
        return self.head(h, y)
