"""A tiny "bring your own" generator factory for the model tests.

The options let a test make it misbehave: `scale` stretches the output past [-1, 1],
`claim_classes` lies about the class count, `out_side` changes the image size, `fail`
raises in forward.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TinyGenerator(nn.Module):
    def __init__(self, latent_dim, num_classes, image_shape, scale=1.0, out_side=None, fail=False):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        channels, height, width = image_shape
        if out_side is not None:
            height = width = out_side
        self.out_shape = (channels, height, width)
        self.scale, self.fail = scale, fail
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.linear = nn.Linear(2 * latent_dim, math.prod(self.out_shape))

    def forward(self, z, y):
        if self.fail:
            raise RuntimeError("boom\nsecond line")
        h = self.linear(torch.cat([z, self.embed(y)], dim=1))
        return self.scale * torch.tanh(h).view(-1, *self.out_shape)


def make(latent_dim, num_classes, image_shape, scale=1.0, claim_classes=None, out_side=None, fail=False):
    module = TinyGenerator(latent_dim, num_classes, image_shape, scale=scale, out_side=out_side, fail=fail)
    if claim_classes is not None:
        module.num_classes = claim_classes
    return module


NOT_CALLABLE = 3
