"""Speed helpers that synthesis and the classifier trainer share.

- Precision: bf16 autocast on CUDA by default; on a CPU only when asked for
  (`precision = "bf16"`), and only where the CPU computes bf16 natively (AVX512-BF16 /
  AMX), where oneDNN runs convolutions several times faster than in fp32.
- channels_last for convolutional models, on CPU as on GPU: oneDNN and cuDNN are fastest
  in NHWC, and PyTorch's NCHW max-pool on a CPU is an order of magnitude slower.
- Inference copies of eval-mode models with BatchNorm folded into the convolution or
  linear layer before it (torch.fx), kept only when they agree with the original, and
  under bf16 cast to bf16 once (weights and activations), instead of autocast re-casting
  every weight at every call: on a CPU with native bf16 that is what halves a pass.
- `torch.compile` once per worker: a `ModelSlot` holds one module and its compiled
  forward; later trials load new weights into the same parameters and reuse the code.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import sys
import warnings

import torch
from torch import nn

from gafi_opt.errors import GafiError
from gafi_opt.spec import PRECISIONS

_PREPARED = "_gafi_inference_ready"


def cpu_has_native_bf16() -> bool:
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `device` under `precision`, or None for plain fp32."""
    if precision not in PRECISIONS:
        raise GafiError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if precision == "bf16":
        if device.type == "cpu" and not cpu_has_native_bf16():
            raise GafiError("precision bf16 asked for, but this CPU has no native bf16 (AVX512-BF16 or AMX)")
        return torch.bfloat16
    return None  # auto on a CPU: fp32, the numerics every CPU shares


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def is_convolutional(model: nn.Module) -> bool:
    return any(p.dim() == 4 for p in model.parameters())


def to_channels_last(model: nn.Module) -> nn.Module:
    return model.to(memory_format=torch.channels_last) if is_convolutional(model) else model


def inference_copy(
    model: nn.Module, device: torch.device, probe: tuple[torch.Tensor, ...], dtype: torch.dtype | None = None
) -> nn.Module:
    """An eval-mode copy of `model` on `device`, made faster for inference where that is exact.

    Weight parametrizations (spectral norm) are baked into plain weights (in eval mode they
    are fixed), BatchNorm is folded into the convolution or linear layer before it (torch.fx),
    and convolutional models go channels_last. `probe` is an input batch: the faster copy is
    used only if its output matches the original's on it, else a plain eval copy is. With a
    `dtype` (bf16), the copy is then cast to it, if it runs in it and gives finite outputs
    (else it stays fp32 and callers autocast; see `run_inference`). A compiled model, or one
    this function already returned, is used as it is.
    """
    if is_compiled(model) or getattr(model, _PREPARED, False):
        return model
    device = torch.device(device)
    plain = copy.deepcopy(model).to(device).eval()
    candidate = plain
    try:
        from torch.fx.experimental.optimization import fuse

        with torch.inference_mode():
            expected = plain(*probe).float()
        faster = copy.deepcopy(plain)
        _bake_parametrizations(faster)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            faster = fuse(faster).to(device).eval()
        with torch.inference_mode():
            got = faster(*probe).float()
        if expected.shape == got.shape and torch.allclose(expected, got, rtol=1e-3, atol=1e-4):
            candidate = faster
    except Exception:  # untraceable forward (data-dependent control flow, custom ops): keep the plain copy
        candidate = plain
    candidate = to_channels_last(candidate)
    if dtype is not None and dtype != torch.float32:
        candidate = cast_if_it_runs(candidate, dtype, probe)
    if candidate is not plain:  # a traced copy keeps only modules: carry the plain attributes (latent_dim, ...)
        for name, value in vars(model).items():
            if not name.startswith("_") and isinstance(value, (bool, int, float, str, tuple)) and not hasattr(candidate, name):
                setattr(candidate, name, value)
    setattr(candidate, _PREPARED, True)
    return candidate


def cast_if_it_runs(model: nn.Module, dtype: torch.dtype, probe: tuple[torch.Tensor, ...]) -> nn.Module:
    """A copy of `model` in `dtype` if it runs `probe` there with finite outputs, else `model` itself."""
    cast = copy.deepcopy(model).to(dtype)
    try:
        with torch.inference_mode():
            out = cast(*_inputs_as(probe, dtype))
        if torch.isfinite(out.float()).all():
            return cast
    except Exception:  # an op without a kernel for this dtype on this device: stay in fp32
        pass
    return model


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's floating-point weights (fp32 for a model without any)."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)


def _inputs_as(inputs: tuple, dtype: torch.dtype) -> tuple:
    return tuple(x.to(dtype) if torch.is_tensor(x) and x.is_floating_point() else x for x in inputs)


def run_inference(model: nn.Module, dtype: torch.dtype | None, *inputs: torch.Tensor) -> torch.Tensor:
    """`model(*inputs)` in the precision asked for, as fp32 output.

    A model that `inference_copy` already cast (bf16 weights) gets its inputs cast to its
    dtype; a fp32 one runs under autocast to `dtype` (None: plain fp32).
    """
    weights = parameter_dtype(model)
    if weights != torch.float32:
        return model(*_inputs_as(inputs, weights)).float()
    device = next((x.device for x in inputs if torch.is_tensor(x)), torch.device("cpu"))
    with autocast(device, dtype):
        return model(*inputs).float()


def _bake_parametrizations(model: nn.Module) -> None:
    """Replace parametrized tensors by their current values, in this (copied) model only.

    Not parametrize.remove_parametrizations: it deletes the property from the Parametrized*
    class, which a deep copy shares with the original model, and would break the original.
    """
    from torch.nn.utils import parametrize

    with torch.no_grad():
        for module in list(model.modules()):
            if not parametrize.is_parametrized(module):
                continue
            values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
            kinds = {name: isinstance(module.parametrizations[name].original, nn.Parameter) for name in values}
            module.__class__ = module.__class__.__bases__[0]  # the class it had before parametrization
            del module._modules["parametrizations"]
            for name, value in values.items():
                if kinds[name]:
                    module.register_parameter(name, nn.Parameter(value))
                else:
                    module.register_buffer(name, value)


def is_compiled(model: nn.Module) -> bool:
    dynamo = sys.modules.get("torch._dynamo")  # a compiled model implies it is imported; never import it here
    return dynamo is not None and isinstance(model, dynamo.eval_frame.OptimizedModule)


def compile_model(model: nn.Module) -> nn.Module:
    """torch.compile with dynamic batch sizes (the last batch of an epoch is smaller)."""
    if not torch.cuda.is_available():
        # A CUDA build of torch on a machine without a GPU warns, when inductor first loads its C++
        # extension helpers, that it found a CUDA toolkit but no runtime: true, and irrelevant to CPU code.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    return torch.compile(model, dynamic=None)


class ModelSlot:
    """One module per worker, compiled once; each use loads new weights into it in place.

    `load(state_dict)` copies into the existing parameters and buffers, so the compiled
    code (which reads them as inputs) stays valid and no trial pays for compiling again.
    """

    def __init__(self, module: nn.Module, device: torch.device, compile: bool = True):
        self.module = to_channels_last(module.to(device))
        self.forward = compile_model(self.module) if compile else self.module

    def load(self, state_dict: dict) -> None:
        with torch.no_grad():
            self.module.load_state_dict(state_dict)


def probe_latents(latent_dim: int, num_classes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A small fixed (z, y) batch for checking a generator; its own random stream."""
    probe = torch.Generator(device=device).manual_seed(0)  # its own stream: the source's is untouched
    z = torch.randn((8, latent_dim), device=device, generator=probe)
    return z, torch.arange(8, device=device) % num_classes
