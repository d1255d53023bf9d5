"""Train the spec's generator, whichever kind it is: a GAN (gafi_opt.train.gan) or a diffusion model
(gafi_opt.train.diffusion). Both keep one EMA checkpoint per epoch in the same place and format, and resume."""

from __future__ import annotations

import torch

from gafi_opt.data import RealData
from gafi_opt.spec import Spec
from gafi_opt.train import gan


def train_generator(spec: Spec, data: RealData, device: torch.device, seed: int = 0, progress: bool = True) -> int:
    """Train (or resume) the spec's generator; returns the number of epochs done."""
    if spec.is_diffusion:
        from gafi_opt.train.diffusion import train_diffusion  # diffusers is an optional extra: imported only for diffusion

        return train_diffusion(spec, data, device, seed=seed, progress=progress)
    return gan.train_generator(spec, data, device, seed=seed, progress=progress)
