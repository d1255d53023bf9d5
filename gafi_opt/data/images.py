"""The one storage format of every image set: uint8 in [0, 255]; models see float in [-1, 1]."""

from __future__ import annotations

import torch


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float in [-1, 1], the range generators produce."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] -> uint8, the storage format of every image set."""
    return images.clamp(-1, 1).add(1).mul_(127.5).round_().to(torch.uint8)
