"""SyntheticSource: a class-balanced synthetic image set drawn from a conditional generator.

It implements the three GaFi techniques that act on sampling:
- the Expansion Trick: z ~ N(0, sigma^2 I), sigma a number or a (low, high) range per sample;
- Dynamic Sample Filtering: a sample is kept when the filter classifier's argmax is its
  class and p[class] > threshold; rejected slots are regenerated, for at most
  `max_attempts` rounds, after which the remaining slots get fresh unfiltered samples
  (counted in `stats.fallback`, never duplicated);
- Dynamic Dataset Recycle: `recycle(fraction)` renews a random share of the slots.

Everything runs batched over all classes at once, under inference mode, on the device
that trains the classifier; the set itself is a uint8 tensor on that device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from gafi_opt.augment import to_float, to_uint8

MAX_OVERSAMPLING = 8  # candidates per missing slot in one round, when acceptance is low


@dataclass
class SynthesisStats:
    """Counts per class since the source was made (tensors on the device until read)."""

    generated: torch.Tensor
    accepted: torch.Tensor
    fallback: torch.Tensor

    @classmethod
    def zeros(cls, num_classes: int, device) -> "SynthesisStats":
        return cls(*(torch.zeros(num_classes, dtype=torch.long, device=device) for _ in range(3)))

    @property
    def acceptance_rate(self) -> float:
        generated = int(self.generated.sum())
        return int(self.accepted.sum()) / generated if generated else 1.0

    def per_class_acceptance(self) -> list[float]:
        rates = self.accepted.float() / self.generated.clamp(min=1).float()
        return rates.tolist()


class SyntheticSource:
    def __init__(
        self,
        generator: nn.Module,
        num_classes: int,
        per_class: int,
        stddev: float | tuple[float, float] = 1.0,
        threshold: float | None = None,
        filter_model: nn.Module | None = None,
        max_attempts: int = 10,
        batch_size: int = 1024,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        if threshold is not None and filter_model is None:
            raise ValueError("filtering needs a filter classifier")
        if threshold is not None and not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        low, high = (stddev, stddev) if isinstance(stddev, (int, float)) else stddev
        if low <= 0 or high < low:
            raise ValueError(f"stddev must be > 0 (or a range 0 < low <= high), got {stddev}")
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval()
        self.filter_model = filter_model.to(self.device).eval() if filter_model is not None else None
        self.num_classes = num_classes
        self.latent_dim = int(generator.latent_dim)
        self.stddev_range = (float(low), float(high))
        self.threshold = threshold
        self.max_attempts = max_attempts
        self.batch_size = batch_size
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        self.labels = torch.arange(num_classes, device=self.device).repeat_interleave(per_class)
        self.images: torch.Tensor | None = None
        self.stats = SynthesisStats.zeros(num_classes, self.device)
        self._acceptance_estimate = 1.0

    def __len__(self) -> int:
        return self.labels.numel()

    def fill(self) -> None:
        """(Re)generate every slot."""
        self._generate_slots(torch.arange(len(self), device=self.device))

    def recycle(self, fraction: float = 1.0) -> None:
        """Dynamic Dataset Recycle: renew a random `fraction` of the slots (all when 1)."""
        if self.images is None or fraction >= 1.0:
            return self.fill()
        count = max(1, round(fraction * len(self)))
        slots = torch.randperm(len(self), device=self.device, generator=self.rng)[:count]
        self._generate_slots(slots)

    # ------------------------------------------------------------ internals

    @torch.inference_mode()
    def _generate_slots(self, slots: torch.Tensor) -> None:
        if self.images is None:
            c, h, w = self._image_shape()
            self.images = torch.zeros((len(self), c, h, w), dtype=torch.uint8, device=self.device)
        pending = slots
        for _ in range(self.max_attempts if self.threshold is not None else 1):
            if pending.numel() == 0:
                return
            pending = self._attempt(pending)
        if pending.numel():
            # Bounded filtering gave up on these slots: fill them with fresh unfiltered
            # samples and say so, rather than looping forever or duplicating accepted ones.
            self.images[pending] = self._sample(self.labels[pending])
            self.stats.fallback += torch.bincount(self.labels[pending], minlength=self.num_classes)

    def _attempt(self, pending: torch.Tensor) -> torch.Tensor:
        """One filtering round: k candidates per pending slot; returns the slots still empty."""
        k = 1 if self.threshold is None else min(MAX_OVERSAMPLING, math.ceil(1.0 / max(self._acceptance_estimate, 1e-3)))
        still_pending = []
        chunk = max(1, self.batch_size // k)
        accepted_total, generated_total = 0, 0
        for start in range(0, pending.numel(), chunk):
            slots = pending[start : start + chunk]
            labels = self.labels[slots].repeat(k)  # candidate j belongs to slot j % len(slots)
            candidates = self._sample(labels)
            accept = self._accepts(candidates, labels)
            self.stats.generated += torch.bincount(labels, minlength=self.num_classes)
            self.stats.accepted += torch.bincount(labels[accept], minlength=self.num_classes)
            accepted_total += int(accept.sum())
            generated_total += labels.numel()
            # The first accepted candidate of each slot fills it.
            per_slot = accept.view(k, slots.numel())
            filled = per_slot.any(0)
            first = per_slot.int().argmax(0)
            chosen = candidates.view(k, slots.numel(), *candidates.shape[1:])[first, torch.arange(slots.numel(), device=self.device)]
            self.images[slots[filled]] = chosen[filled]
            still_pending.append(slots[~filled])
        self._acceptance_estimate = accepted_total / max(1, generated_total)
        return torch.cat(still_pending)

    def _sample(self, labels: torch.Tensor) -> torch.Tensor:
        """Generate uint8 images for `labels` in batches, with the Expansion Trick's stddev."""
        out = []
        low, high = self.stddev_range
        for start in range(0, labels.numel(), self.batch_size):
            y = labels[start : start + self.batch_size]
            z = torch.randn((y.numel(), self.latent_dim), device=self.device, generator=self.rng)
            if high > low:
                sigma = low + (high - low) * torch.rand((y.numel(), 1), device=self.device, generator=self.rng)
            else:
                sigma = low
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                images = self.generator(z * sigma, y)
            out.append(to_uint8(images.float()))
        return torch.cat(out)

    def _accepts(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.threshold is None:
            return torch.ones_like(labels, dtype=torch.bool)
        accept = []
        for start in range(0, labels.numel(), self.batch_size):
            x = to_float(images[start : start + self.batch_size])
            y = labels[start : start + self.batch_size]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                probs = self.filter_model(x).float().softmax(1)
            p_class = probs.gather(1, y[:, None]).squeeze(1)
            accept.append((probs.argmax(1) == y) & (p_class > self.threshold))
        return torch.cat(accept)

    def _image_shape(self) -> tuple[int, int, int]:
        probe = self._sample(self.labels[:1])
        return tuple(probe.shape[1:])
