"""Class-conditional diffusion generators: a diffusers UNet2DModel and a diffusers scheduler behind the
generator interface, so SyntheticSource samples, filters and recycles them as it does a GAN.

`DiffusionGenerator(z, labels)` runs the reverse process from the initial noise z, shaped (n, C*H*W)
(`latent_dim` = C*H*W: the latent is the image-shaped noise, so SyntheticSource's stddev scales the
initial noise, the Expansion Trick's role), for every label of the batch at once, and returns images
in [-1, 1]. Its sampling knobs are plain attributes, set per trial (`configure`):

- `sampler`: "ddim" (eta 0), "dpm-solver" (DPM-Solver++ 2M) or "ddpm" (ancestral sampling);
- `steps`: denoising steps, spaced "trailing" so that the first step starts from pure noise;
- `guidance`: classifier-free guidance w, eps = (1 + w) eps(x, y) - w eps(x, null) (Ho & Salimans);
  0 is plain conditional sampling with one UNet pass per step, w > 0 doubles the batch. (diffusers'
  pipelines call 1 + w the guidance_scale.)

The UNet has num_classes + 1 class embeddings: index num_classes is the unconditional label, the one
that replaced dropped labels in training. The predicted clean image is clipped to [-1, 1] at every step
(clip_sample; dynamic thresholding with ratio 1 for DPM-Solver), as pixel-space models of [-1, 1] data
are sampled. The scheduler's arithmetic stays in fp32; only the UNet runs in bf16 when it was cast.
DDPM's per-step noise comes from a generator seeded by the initial noise, so with every sampler an
image is a function of its z and label alone, and a seeded SyntheticSource is reproducible.
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import nn

from gafi_opt.errors import GafiError
from gafi_opt.spec import SAMPLERS, DiffusionSpec

try:
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
except ImportError:  # the optional extra: a GAN pipeline never imports this module
    raise GafiError("generator.arch 'diffusion' needs the diffusers library: pip install 'gafi-opt[diffusion]'") from None

# What a noise schedule is made of (the keys of a diffusers scheduler_config.json that matter here).
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")


def noise_schedule(spec: DiffusionSpec) -> dict:
    """The training noise schedule of a generator built from the spec."""
    return {"num_train_timesteps": spec.train_timesteps, "beta_schedule": spec.beta_schedule, "prediction_type": spec.prediction_type}


def training_scheduler(schedule: dict) -> DDPMScheduler:
    """The forward (noising) process a model is trained on: add_noise and get_velocity."""
    return DDPMScheduler(**schedule)


def sampling_scheduler(sampler: str, schedule: dict):
    """A fresh scheduler for one reverse process (schedulers keep state between steps)."""
    common = dict(schedule, timestep_spacing="trailing")
    if sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=True)
    if sampler == "ddpm":
        return DDPMScheduler(**common, clip_sample=True, clip_sample_range=1.0, variance_type="fixed_small")
    if sampler == "dpm-solver":
        # Dynamic thresholding with sample_max_value 1 clips the predicted clean image to [-1, 1].
        return DPMSolverMultistepScheduler(
            **common, algorithm_type="dpmsolver++", solver_order=2, thresholding=True, sample_max_value=1.0
        )
    raise GafiError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")


def build_unet(spec: DiffusionSpec, width: int, image_shape: tuple[int, int, int], num_classes: int) -> UNet2DModel:
    """A UNet2DModel for the data's image shape with num_classes + 1 learned class embeddings."""
    channels, height, side = image_shape
    levels = len(spec.channel_mult)
    if height % 2 ** (levels - 1) or side % 2 ** (levels - 1):
        raise GafiError(f"a {levels}-level UNet halves the image {levels - 1} time(s): {height}x{side} does not divide (shorten generator.diffusion.channel_mult)")
    attention = spec.attention or (False,) * levels
    return UNet2DModel(
        sample_size=(height, side),
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(width * m for m in spec.channel_mult),
        layers_per_block=spec.layers_per_block,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        add_attention=spec.mid_attention,
        norm_num_groups=spec.norm_groups,
        num_class_embeds=num_classes + 1,
    )


class DiffusionGenerator(nn.Module):
    def __init__(self, unet: UNet2DModel, num_classes: int, schedule: dict, sampler: str = "dpm-solver", steps: int = 20, guidance: float = 0.0):
        super().__init__()
        self.unet = unet
        self.num_classes = int(num_classes)
        config = unet.config
        side = config.sample_size if isinstance(config.sample_size, (list, tuple)) else (config.sample_size, config.sample_size)
        self.image_shape = (int(config.in_channels), int(side[0]), int(side[1]))
        self.latent_dim = math.prod(self.image_shape)
        self.schedule = {k: v for k, v in schedule.items() if k in SCHEDULE_KEYS}
        self.configure(sampler=sampler, steps=steps, guidance=guidance)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def configure(self, sampler: str | None = None, steps: int | None = None, guidance: float | None = None) -> None:
        """Set the sampling knobs (those given)."""
        if sampler is not None:
            if sampler not in SAMPLERS:
                raise GafiError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
            self.sampler = sampler
        if steps is not None:
            if steps < 1:
                raise GafiError(f"sampling steps must be >= 1, got {steps}")
            self.steps = int(steps)
        if guidance is not None:
            if guidance < 0:
                raise GafiError(f"guidance must be >= 0, got {guidance}")
            self.guidance = float(guidance)

    @torch.no_grad()
    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        scheduler = sampling_scheduler(self.sampler, self.schedule)
        scheduler.set_timesteps(self.steps, device=z.device)
        x = z.float().reshape(-1, *self.image_shape) * scheduler.init_noise_sigma
        noise = _noise_generator(z) if self.sampler == "ddpm" else None
        for t in scheduler.timesteps:
            output = self.predict(scheduler.scale_model_input(x, t), t, labels)
            x = scheduler.step(output, t, x, generator=noise).prev_sample
        return x.clamp(-1, 1)

    def predict(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The UNet's output (noise or velocity) for x at step t, with classifier-free guidance."""
        dtype = next(self.unet.parameters()).dtype
        if self.guidance == 0:
            return self.unet(x.to(dtype), t, class_labels=labels).sample.float()
        null = torch.full_like(labels, self.null_class)
        both = self.unet(torch.cat([x, x]).to(dtype), t, class_labels=torch.cat([labels, null])).sample.float()
        conditional, unconditional = both.chunk(2)
        return conditional + self.guidance * (conditional - unconditional)


def _noise_generator(z: torch.Tensor) -> torch.Generator:
    """A generator for DDPM's per-step noise, seeded by a checksum of the initial noise (one small host copy)."""
    head = z[:, :16].detach().float().cpu().contiguous().numpy().tobytes()
    return torch.Generator(device=z.device).manual_seed(zlib.crc32(head) + z.shape[0])


def build_diffusion_generator(spec, image_shape: tuple[int, int, int], num_classes: int) -> DiffusionGenerator:
    """The generator a GeneratorSpec with arch "diffusion" describes, sampling with its default knobs."""
    d = spec.diffusion
    unet = build_unet(d, spec.width, image_shape, num_classes)
    return DiffusionGenerator(unet, num_classes, noise_schedule(d), sampler=d.sampler, steps=d.steps, guidance=d.guidance)
