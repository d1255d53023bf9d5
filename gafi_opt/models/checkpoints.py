"""Where generator checkpoints live and how they are read back, safely.

A checkpoint is the EMA generator's state dict after one epoch, in
`<run_dir>/generator/epoch_0001.pt`, or any file matched by `generator.checkpoints`
(a folder or a glob) whose name holds the epoch number. Files are read with
`torch.load(weights_only=True)`: no pickle from disk is ever executed.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import torch
from torch import nn

from gafi_opt.errors import GafiError, one_line
from gafi_opt.models import build_generator
from gafi_opt.spec import Spec

_EPOCH = re.compile(r"(\d+)(?!.*\d)")  # the last number in a file name


def generator_dir(spec: Spec) -> Path:
    return spec.run_path / "generator"


def checkpoint_paths(spec: Spec) -> dict[int, Path]:
    """Epoch -> checkpoint file, from the run directory or from generator.checkpoints."""
    if spec.generator.checkpoints:
        pattern = spec.generator.checkpoints
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, "*.pt")
        files = [Path(p) for p in glob.glob(pattern)]
    else:
        files = list(generator_dir(spec).glob("epoch_*.pt"))
    found = {}
    for path in files:
        match = _EPOCH.search(path.stem)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def require_checkpoints(spec: Spec, epochs) -> dict[int, Path]:
    """The checkpoint files of `epochs`, or a GafiError naming what is missing."""
    available = checkpoint_paths(spec)
    where = spec.generator.checkpoints or str(generator_dir(spec))
    if not available:
        raise GafiError(f"no generator checkpoints found in {where}")
    missing = [int(e) for e in epochs if int(e) not in available]
    if missing:
        raise GafiError(f"no checkpoint for epoch(s) {missing[:5]} in {where} (found epochs {min(available)}-{max(available)})")
    return {int(e): available[int(e)] for e in epochs}


def load_state_dict(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GafiError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise GafiError(f"cannot read checkpoint {path}: {one_line(exc)}") from None
    if isinstance(state, dict) and "generator" in state and isinstance(state["generator"], dict):
        state = state["generator"]
    if not isinstance(state, dict):
        raise GafiError(f"checkpoint {path} does not hold a state dict")
    return state


def load_generator(spec: Spec, path: Path, image_shape, num_classes: int, device="cpu") -> nn.Module:
    """Build the spec's generator and load a checkpoint into it, with a clear error on mismatch."""
    generator = build_generator(spec.generator, image_shape, num_classes)
    state = load_state_dict(path)
    try:
        generator.load_state_dict(state)
    except RuntimeError as exc:
        raise GafiError(f"checkpoint {path} does not fit the spec's generator: {one_line(exc)}") from None
    return generator.to(device).eval()


def atomic_save(obj, path: Path) -> None:
    """Write then rename, so an interruption never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
