"""The models a worker compiles once when the spec says `compile = true`.

torch.compile is paid for once per worker, not once per trial: the filter is compiled
as it is; the generator and the CAS classifier each live in a `ModelSlot` whose
parameters take each trial's weights in place (a checkpoint's, or a fresh seeded
initialisation), so every later trial reuses the compiled code.
"""

from __future__ import annotations

import torch
from torch import nn

from gafi_opt.data import to_float
from gafi_opt.models import build_classifier, build_generator
from gafi_opt.models.accel import ModelSlot, autocast_dtype, cast_if_it_runs, compile_model, inference_copy, probe_latents
from gafi_opt.models.checkpoints import load_generator, require_checkpoints
from gafi_opt.spec import Spec


class CompiledModels:
    def __init__(self, spec: Spec, image_shape, num_classes: int, device: torch.device, filter_model: nn.Module, probe_images: torch.Tensor):
        self.spec, self.image_shape, self.num_classes, self.device = spec, tuple(image_shape), num_classes, device
        dtype = autocast_dtype(device, spec.precision)  # bf16: both synthesis models are cast once, as uncompiled
        self.filter = compile_model(inference_copy(filter_model, device, (to_float(probe_images[:8].to(device)),), dtype))
        generator = build_generator(spec.generator, self.image_shape, num_classes).to(device).eval()
        if dtype is not None:
            generator = cast_if_it_runs(generator, dtype, probe_latents(int(generator.latent_dim), num_classes, device))
        self.generator_slot = ModelSlot(generator, device)  # each checkpoint's weights are copied in, cast to its dtype
        self.classifier = ModelSlot(build_classifier(spec.cas, self.image_shape, num_classes), device)
        self.generator_epoch: int | None = None

    def generator(self, epoch: int) -> nn.Module:
        """The compiled generator, holding checkpoint `epoch`'s weights."""
        if epoch != self.generator_epoch:
            path = require_checkpoints(self.spec, [epoch])[epoch]
            loaded = load_generator(self.spec, path, self.image_shape, self.num_classes)  # checks the file fits
            self.generator_slot.load(loaded.state_dict())
            self.generator_epoch = epoch
        return self.generator_slot.forward
