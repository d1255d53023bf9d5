"""Bring your own generator: build it from a "package.module:function" factory, and check
that any generator fits the data before a trial spends time on it."""

from __future__ import annotations

import importlib

import torch
from torch import nn

from gafi_opt.errors import GafiError
from gafi_opt.spec import GeneratorSpec

RANGE_TOLERANCE = 1e-3
CHECK_BATCH = 64  # labels 0..K-1 are checked in chunks of this many


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_factory(target: str):
    """Import `package.module:function` and return the callable. Raises GafiError."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise GafiError(f"generator factory {target!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name.strip())
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise GafiError(f"cannot import generator factory {target!r}: {_one_line(exc)}") from None
    obj = module
    try:
        for part in attr.strip().split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise GafiError(f"generator factory {target!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise GafiError(f"generator factory {target!r} is not callable (got {type(obj).__name__})")
    return obj


def build_from_factory(spec: GeneratorSpec, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Call the factory as f(latent_dim=, num_classes=, image_shape=, **spec.options)."""
    factory = load_factory(spec.arch)
    kwargs = dict(latent_dim=spec.latent_dim, num_classes=num_classes, image_shape=tuple(image_shape), **spec.options)
    try:
        module = factory(**kwargs)
    except TypeError as exc:
        raise GafiError(
            f"generator factory {spec.arch!r} rejected its arguments ({', '.join(sorted(kwargs))}): {_one_line(exc)}"
        ) from None
    except GafiError:
        raise
    except Exception as exc:
        raise GafiError(f"generator factory {spec.arch!r} failed: {_one_line(exc)}") from None
    if not isinstance(module, nn.Module):
        raise GafiError(f"generator factory {spec.arch!r} must return a torch.nn.Module, got {type(module).__name__}")
    return module


def check_generator(
    module: nn.Module, image_shape: tuple[int, int, int], num_classes: int, device: str | torch.device = "cpu"
) -> None:
    """Validate a generator before any trial uses it. Raises GafiError with a one-line message.

    The module must already be on `device`. It is run in eval mode under inference_mode on
    random z for every label 0..K-1 (its train/eval mode is restored afterwards); the
    output must have shape (n, *image_shape), be finite and lie in [-1, 1].
    """
    if not isinstance(module, nn.Module):
        raise GafiError(f"generator must be a torch.nn.Module, got {type(module).__name__}")
    for name in ("latent_dim", "num_classes"):
        value = getattr(module, name, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GafiError(f"generator must have an int attribute {name!r} >= 1, got {value!r}")
    if module.num_classes != num_classes:
        raise GafiError(f"generator has {module.num_classes} classes, data has {num_classes}")
    expected = tuple(int(s) for s in image_shape)
    labels = torch.arange(num_classes, device=device)
    rng = torch.Generator().manual_seed(0)  # leave the global RNG alone
    was_training = module.training
    module.eval()
    try:
        low, high = float("inf"), float("-inf")
        for chunk in labels.split(CHECK_BATCH):
            z = torch.randn(len(chunk), module.latent_dim, generator=rng).to(device)
            try:
                with torch.inference_mode():
                    out = module(z, chunk)
            except Exception as exc:
                raise GafiError(f"generator forward failed: {_one_line(exc)}") from None
            if not isinstance(out, torch.Tensor):
                raise GafiError(f"generator forward must return a tensor, got {type(out).__name__}")
            if tuple(out.shape) != (len(chunk), *expected):
                raise GafiError(
                    f"generator output shape is {tuple(out.shape)}, expected {(len(chunk), *expected)} "
                    f"(n, *image_shape) for the data's image shape {expected}"
                )
            out = out.float()
            if not torch.isfinite(out).all():
                raise GafiError("generator output has NaN or infinite values")
            low, high = min(low, out.min().item()), max(high, out.max().item())
        if low < -1 - RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise GafiError(
                f"generator output range [{low:.4g}, {high:.4g}] is outside [-1, 1] (end the generator with tanh)"
            )
    finally:
        module.train(was_training)
