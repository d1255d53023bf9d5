"""Where generator checkpoints live and how they are read back, safely.

A checkpoint is the EMA generator's state dict after one epoch, in
`<run_dir>/generator/epoch_0001.pt`, or a file of `generator.checkpoints`: a folder (its `*.pt` and
`*.pth` files) or a glob. A checkpoint's name is `<prefix><epoch>.pt` (or `.pth`): a prefix with no
digit in it (`epoch_`, `gen-`, or none) and the epoch number, e.g. `epoch_0012.pt`, `12.pt`,
`gen_epoch12.pt`. Any other name there (`epoch_0004_backup2.pt`), or two files for one epoch
(`epoch_6.pt` beside `epoch_0006.pt`), is an error naming the files: an epoch is never guessed.
`state.pt`, gafi-opt's own training state beside its checkpoints, is not one and is passed over.
A diffusion generator brought along is a diffusers UNet2DModel folder instead
(gafi_opt.models.unet_folder). Files are read with `torch.load(weights_only=True)` or safetensors: no
pickle from disk is ever executed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import threading
from pathlib import Path

import torch
from torch import nn

from gafi_opt.errors import GafiError, one_line
from gafi_opt.models import build_generator
from gafi_opt.models.unet_folder import load_unet_folder, model_folders
from gafi_opt.spec import Spec

CHECKPOINT_NAME = re.compile(r"\D*?(\d+)\.pth?")  # the whole file name: a prefix without digits, the epoch
CHECKPOINT_NAME_HELP = "<prefix><epoch>.pt with no digit in the prefix, e.g. epoch_0012.pt or 12.pt"
TRAINING_STATE = "state.pt"  # written by gafi_opt.train.gan beside the checkpoints it makes
NOT_WEIGHTS = "not a file of weights written by torch.save, or a damaged one"


def generator_dir(spec: Spec) -> Path:
    return spec.run_path / "generator"


def checkpoint_paths(spec: Spec) -> dict[int, Path]:
    """Epoch -> checkpoint file, from the run directory or from generator.checkpoints."""
    if spec.generator.checkpoints and spec.is_diffusion:
        return model_folders(spec.generator.checkpoints)
    if spec.generator.checkpoints:
        pattern = spec.generator.checkpoints
        if os.path.isdir(pattern):
            files = [Path(p) for ext in ("*.pt", "*.pth") for p in glob.glob(os.path.join(glob.escape(pattern), ext))]
        else:
            files = [Path(p) for p in glob.glob(pattern)]
    else:
        files = list(generator_dir(spec).glob("*.pt"))
    found: dict[int, Path] = {}
    for path in sorted(files):
        if path.name == TRAINING_STATE:
            continue
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if not match:
            raise GafiError(f"{path} is not a checkpoint name ({CHECKPOINT_NAME_HELP}): rename it or move it away")
        epoch = int(match.group(1))
        if epoch in found:
            raise GafiError(f"two checkpoints for epoch {epoch}: {found[epoch]} and {path}; keep one")
        found[epoch] = path
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


def read_weights(path: Path, what: str):
    """torch.load(weights_only=True): tensors and plain containers, never code. Any failure is a
    GafiError naming `what` and the file (and a link's target), in words of ours, not torch's."""
    path = Path(path)
    shown = f"{path} (a link to {os.path.realpath(path)})" if path.is_symlink() else str(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GafiError(f"{what} not found: {shown}") from None
    except IsADirectoryError:
        raise GafiError(f"{what} {shown} is a folder, not a file") from None
    except PermissionError:
        raise GafiError(f"cannot read {what} {shown}: permission denied") from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise GafiError(f"cannot read {what} {shown}: {_why_unreadable(exc)}") from None


def _why_unreadable(exc: Exception) -> str:
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # torch's refusal: a pickle that is more than weights
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            return f"it holds a pickled {found.group(1)}, not only tensors, and gafi-opt never runs code from a file"
        return NOT_WEIGHTS
    if isinstance(exc, EOFError):
        return "the file is empty or cut short"
    if isinstance(exc, RuntimeError):  # torch's zip reader says what is wrong with the archive, first
        detail = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", one_line(exc, 1000))
        detail = without_unsafe_advice(re.split(r"(?<=\.)\s", detail, maxsplit=1)[0].rstrip("."))
        return f"{NOT_WEIGHTS} ({detail[:160]})" if detail else NOT_WEIGHTS
    return NOT_WEIGHTS  # the unpickler's IndexError, KeyError, ... say nothing about the file


def without_unsafe_advice(text: str) -> str:
    """`text` without PyTorch's advice to retry with weights_only=False or to allowlist globals:
    that would run code from the file, which gafi-opt never asks anyone to do."""
    sentences = re.split(r"(?<=[.!?])\s+", text)
    unsafe = ("weights_only", "safe_globals", "trusted source", "trust the source")
    return " ".join(s for s in sentences if not any(word in s for word in unsafe)).strip()


def load_state_dict(path: Path) -> dict:
    state = read_weights(path, "checkpoint")
    if isinstance(state, dict) and "generator" in state and isinstance(state["generator"], dict):
        state = state["generator"]
    if not isinstance(state, dict):
        raise GafiError(f"checkpoint {path} does not hold a state dict")
    return state


def load_generator(spec: Spec, path: Path, image_shape, num_classes: int, device="cpu") -> nn.Module:
    """Build the spec's generator and load a checkpoint into it, with a clear error on mismatch."""
    if spec.is_diffusion and Path(path).is_dir():  # a diffusers model folder brought along
        return load_unet_folder(Path(path), spec.generator, image_shape, num_classes).to(device).eval()
    generator = build_generator(spec.generator, image_shape, num_classes)
    state = load_state_dict(path)
    try:
        generator.load_state_dict(state)
    except RuntimeError as exc:
        raise GafiError(f"checkpoint {path} does not fit the spec's generator: {one_line(exc)}") from None
    return generator.to(device).eval()


def atomic_save(obj, path: Path) -> None:
    """Write then rename, so an interruption never leaves a truncated file. A failed write (a full
    disk) is a GafiError naming the file and the cause, and the partial file is removed. Ctrl-C or
    SIGTERM during the write waits for it to end (held_signals), then stops as it would have."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Through a Python file a failed write raises OSError with its errno (ENOSPC); torch's own
        # writer would report only "unexpected pos".
        with held_signals():
            with open(tmp, "wb") as file:
                torch.save(obj, file)
            os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        # torch wraps what its writer met (Ctrl-C, a full disk) in a RuntimeError: look behind it.
        chain = _chain(exc)
        stop = next((e for e in chain if not isinstance(e, Exception)), None)
        if stop is not None:
            raise stop from None  # Ctrl-C and the like: stop, with nothing half-written left behind
        cause = next((e for e in chain if isinstance(e, OSError)), None)
        if cause is None:
            if isinstance(exc, RuntimeError):
                raise GafiError(f"cannot write {path}: {one_line(exc)}") from None
            raise
        reason = os.strerror(cause.errno) if cause.errno else one_line(cause)
        raise GafiError(f"cannot write {path}: {reason[:1].lower()}{reason[1:]}") from None


@contextlib.contextmanager
def held_signals():
    """SIGINT and SIGTERM wait until the block ends, then reach the handlers they would have reached.

    torch's zip writer calls back into Python to write; a KeyboardInterrupt raised inside such a call
    (a write cut by the signal) comes out of it as a RuntimeError ("unexpected pos"), which would read as
    a failed write. Held, the save ends whole and the stop comes after it. A second signal stops at once.
    Signals reach only the main thread, so elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum, _frame):
        if held:
            raise KeyboardInterrupt
        held.append(signum)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    previous = {signum: handler for signum, handler in previous.items() if handler is not None}  # None: not set from Python
    for signum in previous:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            signal.raise_signal(held[0])


def _chain(exc: BaseException | None) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or while handling."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain
