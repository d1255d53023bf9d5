"""SyntheticSource: a class-balanced synthetic image set drawn from a conditional generator.

It implements the three GaFi techniques that act on sampling:
- the Expansion Trick: z ~ N(0, sigma^2 I), sigma a number or a (low, high) range per sample;
- Dynamic Sample Filtering: a sample is kept when the filter classifier's argmax is its
  class and p[class] > threshold; rejected slots are regenerated, for at most
  `max_attempts` rounds, after which the remaining slots get fresh unfiltered samples
  (counted in `stats.fallback`, never duplicated);
- Dynamic Dataset Recycle: `recycle(fraction)` renews a random share of the slots.

A filtered source also records `same_set_thresholds`: the thresholds that would have taken exactly
the same decisions on every candidate it drew, so the same random draws and the same set (a
confident filter accepts nothing near a low threshold: on digits 0.0 to 0.3 often make one set).

Everything runs batched over all classes at once, under inference mode, on the device
that trains the classifier; the set itself is a uint8 tensor on that device. A filtering
round draws, for every class, as many candidates as its measured acceptance rate says
will fill its empty slots, generates and filters them in full batches, and hands each
accepted candidate to the next empty slot of its class (any accepted sample of a class
can fill any slot of that class, so no accepted sample is thrown away while a slot of
its class is still empty). The host synchronises twice per round, on two counts (the
round's draws, the slots left), never per class or per batch. Generator and filter run as
inference copies (BatchNorm folded, spectral norm baked, channels_last: gafi_opt.accel)
in the spec's `precision` (bf16 on CUDA by default; on a CPU with native bf16 when asked).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from gafi_opt.data.images import to_float, to_uint8
from gafi_opt.models.accel import autocast_dtype, inference_copy, probe_latents, run_inference

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
        precision: str = "auto",
    ):
        if threshold is not None and filter_model is None:
            raise ValueError("filtering needs a filter classifier")
        if threshold is not None and not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        low, high = (stddev, stddev) if isinstance(stddev, (int, float)) else stddev
        if low <= 0 or high < low:
            raise ValueError(f"stddev must be > 0 (or a range 0 < low <= high), got {stddev}")
        if max_attempts < 1 or batch_size < 1 or per_class < 1:
            raise ValueError("max_attempts, batch_size and per_class must be >= 1")
        self.device = torch.device(device)
        self.dtype = autocast_dtype(self.device, precision)
        self.num_classes = num_classes
        self.latent_dim = int(generator.latent_dim)
        # Inference copies (BatchNorm folded, channels_last); models prepared before are kept as they are.
        self.generator = prepare_generator(generator, self.device, num_classes, precision)
        with torch.inference_mode():
            example = run_inference(self.generator, self.dtype, *probe_latents(self.latent_dim, num_classes, self.device)).clamp(-1, 1)
        self.image_shape = tuple(example.shape[1:])
        self.chunk = _chunk_size(batch_size, self.image_shape, self.device)
        self.filter_model = prepare_filter(filter_model, self.device, example, precision) if filter_model is not None else None
        self.stddev_range = (float(low), float(high))
        self.threshold = threshold
        self.max_attempts = max_attempts
        self.batch_size = batch_size
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        self.labels = torch.arange(num_classes, device=self.device).repeat_interleave(per_class)
        self._store: torch.Tensor | None = None  # len + 1 rows: the last one takes writes that go nowhere
        self.stats = SynthesisStats.zeros(num_classes, self.device)
        self.filled = 0  # slots (re)generated so far, fallback ones included
        # Over all candidates whose argmax is their class: the highest p[class] rejected, the lowest accepted.
        self._rejected_max = torch.zeros((), device=self.device)
        self._accepted_min = torch.ones((), device=self.device)

    def __len__(self) -> int:
        return self.labels.numel()

    @property
    def images(self) -> torch.Tensor | None:
        return None if self._store is None else self._store[: len(self)]

    @property
    def same_set_thresholds(self) -> tuple[float, float] | None:
        """(low, high): with any threshold t, low <= float32(t) < high, every filter decision so far, and so
        every draw and the set, would have been the same (None when unfiltered)."""
        if self.threshold is None:
            return None
        return float(self._rejected_max), float(self._accepted_min)

    def fill(self, progress: bool = False) -> None:
        """(Re)generate every slot; `progress` shows a bar of filled slots and the acceptance rate."""
        with tqdm(total=len(self), desc="synthetic set", unit="img", leave=False, disable=not progress) as bar:
            self._generate_slots(torch.arange(len(self), device=self.device), None if bar.disable else bar)

    def recycle(self, fraction: float = 1.0) -> None:
        """Dynamic Dataset Recycle: renew a random `fraction` of the slots (all when 1)."""
        if self._store is None or fraction >= 1.0:
            return self.fill()
        count = max(1, round(fraction * len(self)))
        slots = torch.randperm(len(self), device=self.device, generator=self.rng)[:count]
        self._generate_slots(slots)

    # ------------------------------------------------------------ internals

    @torch.inference_mode()
    def _generate_slots(self, slots: torch.Tensor, bar: tqdm | None = None) -> None:
        self.filled += slots.numel()
        if self._store is None:
            c, h, w = self.image_shape
            self._store = torch.zeros((len(self) + 1, c, h, w), dtype=torch.uint8, device=self.device)
        if self.threshold is None:
            self._fill_unfiltered(slots, count_as_accepted=True)
            if bar is not None:
                bar.update(slots.numel())
            return
        # Slots grouped by class, so that each class's empty slots form one run.
        pending = slots[torch.argsort(self.labels[slots], stable=True)]
        for _ in range(self.max_attempts):
            if pending.numel() == 0:
                return
            waiting = pending.numel()
            pending = self._filter_round(pending)
            if bar is not None:
                bar.update(waiting - pending.numel())
                bar.set_postfix(accept=f"{self.stats.acceptance_rate:.2f}")
        if pending.numel():
            # Bounded filtering gave up on these slots: fill them with fresh unfiltered
            # samples and say so, rather than looping forever or duplicating accepted ones.
            self._fill_unfiltered(pending, count_as_accepted=False)
            if bar is not None:
                bar.update(pending.numel())
                bar.set_postfix(accept=f"{self.stats.acceptance_rate:.2f}", fallback=pending.numel())

    def _fill_unfiltered(self, slots: torch.Tensor, count_as_accepted: bool) -> None:
        for start in range(0, slots.numel(), self.chunk):
            chunk = slots[start : start + self.chunk]
            labels = self.labels[chunk]
            self._store[chunk] = self._generate(labels)
            counts = self._class_counts(labels)
            if count_as_accepted:
                self.stats.generated += counts
                self.stats.accepted += counts
            else:
                self.stats.fallback += counts

    def _filter_round(self, pending: torch.Tensor) -> torch.Tensor:
        """One round over class-grouped empty slots; returns those still empty (grouped)."""
        num_classes = self.num_classes
        pending_labels = self.labels[pending]
        missing = self._class_counts(pending_labels)
        first_slot = torch.cumsum(missing, 0) - missing  # where each class's run starts in `pending`
        draws = self._draws_per_class(missing)
        total = int(draws.sum())  # host synchronisation 1 of the round
        candidate_labels = torch.repeat_interleave(torch.arange(num_classes, device=self.device), draws, output_size=total)
        filled = torch.zeros(num_classes, dtype=torch.long, device=self.device)
        dump = len(self)  # the store's spare row
        for start in range(0, total, self.chunk):
            labels = candidate_labels[start : start + self.chunk]
            images = self._generate(labels)
            accept = self._accepts(images, labels)
            # Rank of each accepted candidate among its class's accepted ones so far this round.
            onehot = torch.nn.functional.one_hot(labels, num_classes) * accept[:, None]
            rank = filled[labels] + onehot.cumsum(0).gather(1, labels[:, None]).squeeze(1) - 1
            used = accept & (rank < missing[labels])
            position = (first_slot[labels] + rank).clamp(max=max(0, pending.numel() - 1))
            target = torch.where(used, pending[position], torch.full_like(position, dump))
            self._store.index_copy_(0, target, images)
            accepted_here = onehot.sum(0)
            filled += accepted_here
            self.stats.generated += self._class_counts(labels)
            self.stats.accepted += accepted_here
        # Slots past each class's accepted count stay empty.
        rank_in_class = torch.arange(pending.numel(), device=self.device) - first_slot[pending_labels]
        return pending[rank_in_class >= filled[pending_labels]]  # synchronisation 2: the count left

    def _draws_per_class(self, missing: torch.Tensor) -> torch.Tensor:
        """Candidates per class: m / p for its m empty slots, with p an optimistic acceptance rate.

        p is the class's measured rate plus one standard error (plus 1/n): drawing for a rate
        a little too high leaves a few slots for a small next round, while drawing for one too
        low wastes candidates that are generated, filtered and thrown away (1/p is convex, so
        the plain estimate overdraws on average). A class not yet measured draws m (p = 1),
        as the official code's first round does. Simulated with binomial acceptance, this
        draws within 1-10% of m / p_true in about three rounds.
        """
        n = self.stats.generated.float()
        rate = self.stats.accepted.float() / n.clamp(min=1)
        optimistic = rate + (rate * (1 - rate) / n.clamp(min=1)).sqrt() + 1 / n.clamp(min=1)
        rate = torch.where(n > 0, optimistic, torch.ones_like(n)).clamp(min=1.0 / MAX_OVERSAMPLING, max=1.0)
        draws = torch.ceil(missing.float() / rate).long()
        return torch.minimum(draws, missing * MAX_OVERSAMPLING)

    def _generate(self, labels: torch.Tensor) -> torch.Tensor:
        """uint8 images for `labels` (one batch), with the Expansion Trick's stddev."""
        low, high = self.stddev_range
        z = torch.randn((labels.numel(), self.latent_dim), device=self.device, generator=self.rng)
        if high > low:
            z = z * (low + (high - low) * torch.rand((labels.numel(), 1), device=self.device, generator=self.rng))
        elif low != 1.0:
            z = z * low
        return to_uint8(run_inference(self.generator, self.dtype, z, labels))

    def _accepts(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The filter's verdict on the stored (uint8) form of the images."""
        x = to_float(images).contiguous(memory_format=torch.channels_last)
        probs = run_inference(self.filter_model, self.dtype, x).float().softmax(1)
        p_class = probs.gather(1, labels[:, None]).squeeze(1)
        matches = probs.argmax(1) == labels
        accept = matches & (p_class > self.threshold)
        self._rejected_max = torch.maximum(self._rejected_max, torch.where(matches & ~accept, p_class, 0.0).max())
        self._accepted_min = torch.minimum(self._accepted_min, torch.where(accept, p_class, 1.0).min())
        return accept

    def _class_counts(self, labels: torch.Tensor) -> torch.Tensor:
        # index_add_ instead of bincount: bincount must read the maximum back to the host on CUDA.
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=self.device)
        return counts.index_add_(0, labels, torch.ones_like(labels))


def _chunk_size(batch_size: int, image_shape, device: torch.device) -> int:
    """Images per generator / filter pass: `batch_size`, smaller on a CPU for large images.

    On a CPU, activations past the caches cost more per image (32x32 DCGAN + ResNet-20:
    about 2x per image at 512 than at 128), so a pass holds about 128K pixels per channel.
    """
    if device.type != "cpu":
        return batch_size
    pixels = image_shape[-1] * image_shape[-2]
    return max(1, min(batch_size, max(32, 2**17 // pixels)))


def prepare_generator(generator: nn.Module, device, num_classes: int, precision: str = "auto") -> nn.Module:
    """The generator as synthesis runs it (see accel.inference_copy); do it once per loaded model."""
    device = torch.device(device)
    probe = probe_latents(int(generator.latent_dim), num_classes, device)
    return inference_copy(generator, device, probe, autocast_dtype(device, precision))


def prepare_filter(filter_model: nn.Module, device, example_images: torch.Tensor, precision: str = "auto") -> nn.Module:
    """The filter as synthesis runs it; `example_images` are float images in [-1, 1] (a few suffice)."""
    device = torch.device(device)
    return inference_copy(filter_model, device, (example_images[:8].to(device),), autocast_dtype(device, precision))
