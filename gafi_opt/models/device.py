"""Where models run: the spec's or the command line's device name, checked against this machine."""

from __future__ import annotations

import torch

from gafi_opt.errors import GafiError


def resolve_device(name: str) -> torch.device:
    """`auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N`; a GafiError for anything this machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GafiError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GafiError(f"device {name!r} asked for, but no CUDA device is available")
    return device
