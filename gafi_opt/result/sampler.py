"""Fresh synthetic images from a recipe, on any device: what `load_best` returns and `gafi-opt sample` writes.

Every draw is a gafi_opt.synth.SyntheticSource (or multigen's mix of them) with the recipe's knobs:
the generator at its checkpoint, z ~ N(0, stddev^2 I), the pipeline's filter at its threshold (a
rejected sample is redrawn, at most `synth.max_attempts` rounds, then counted as a fallback), an equal
number of images of every class. Each draw uses a new seed from the sampler's sequence, so draws never
repeat one another and a sampler made with the same seed repeats the same draws.

Two image forms of the same pixels: uint8 in [0, 255] (what the filter judged, what the CAS trials
train on and what files store; the default of `sample`) and float in [-1, 1], the generator's range
and what the project's classifiers take (the default of `batches`). Both are (N, C, H, W) on the
sampler's device, labels int64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import torch

from gafi_opt.cas import TrialContext
from gafi_opt.data import load_data, to_float
from gafi_opt.errors import GafiError
from gafi_opt.models.device import resolve_device
from gafi_opt.result.multigen import MultiGenRun
from gafi_opt.result.recipe import Recipe, resolve
from gafi_opt.synth import SynthesisStats


class Sampler:
    """Draws fresh filtered, class-balanced synthetic sets and batches with one recipe's knobs.

    `make_source(per_class, seed)` builds an unfilled source of `per_class` images of every class.
    Iterating over a sampler yields batches without end (`itertools.islice` takes a number of them).
    """

    def __init__(
        self,
        recipe: Recipe,
        make_source: Callable[[int, int], object],
        num_classes: int,
        image_shape,
        device,
        seed: int,
        per_class: int,
        batch_per_class: int,
    ):
        self.recipe = recipe
        self.per_class = per_class  # the pipeline's synthetic set size per class (TrialContext.per_class)
        self.num_classes = num_classes
        self.image_shape = tuple(image_shape)
        self.device = torch.device(device)
        self.seed = seed
        self.batch_per_class = batch_per_class
        self._make_source = make_source
        self._next_seed = seed
        self._stats: list[SynthesisStats] = []

    def _source(self, per_class: int):
        if per_class < 1:
            raise GafiError(f"images per class must be >= 1, got {per_class}")
        source = self._make_source(per_class, self._next_seed)
        self._next_seed += 1
        # A mix keeps one count per generator; they are live objects, updated by every later fill.
        self._stats += [s.stats for s in getattr(source, "sources", [source])]
        return source

    def sample(self, per_class: int, dtype: torch.dtype = torch.uint8, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh set: `per_class` images of every class, class by class (labels 0, 0, ..., 1, 1, ...; a
        multigen mix: generator by generator, class by class within each)."""
        source = self._source(per_class)
        source.fill(progress=progress)
        return _as(source.images, dtype), source.labels  # the source is not drawn from again

    def batches(
        self, per_class: int | None = None, count: int | None = None, dtype: torch.dtype = torch.float32
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`count` batches (None: without end) of `per_class` fresh images of every class, shuffled.

        Default `per_class`: the pipeline's CAS batch size split over the classes (at least 1).
        """
        source = self._source(per_class or self.batch_per_class)
        shuffle = torch.Generator(device=self.device).manual_seed(self._next_seed)
        made = 0
        while count is None or made < count:
            source.fill()  # every slot drawn afresh
            order = torch.randperm(len(source), device=self.device, generator=shuffle)
            yield _as(source.images[order], dtype), source.labels[order]
            made += 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches()

    @property
    def stats(self) -> SynthesisStats:
        """Counts per class over every draw so far: generated and accepted candidates, fallback samples."""
        return SynthesisStats(*(sum(getattr(s, key) for s in self._stats) for key in ("generated", "accepted", "fallback")))

    @property
    def acceptance_rate(self) -> float:
        return self.stats.acceptance_rate if self._stats else 1.0

    @property
    def fallback(self) -> int:
        return int(self.stats.fallback.sum()) if self._stats else 0


def _as(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 images as they are, or as float in [-1, 1]."""
    if dtype == torch.uint8:
        return images
    if not dtype.is_floating_point:
        raise GafiError(f"images come as torch.uint8 or a float dtype, not {dtype}")
    return to_float(images).to(dtype)


def open_sampler(recipe: Recipe, device="cpu", seed: int | None = None) -> Sampler:
    """A sampler for `recipe` on `device` (loads the real data, the filter(s) and the generator(s))."""
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    seed = recipe.seed if seed is None else seed
    if recipe.members:
        run = MultiGenRun(list(recipe.pipelines), list(recipe.members), device)
        context, make = run.context, (lambda per_class, s: run.source(s, per_class))
    else:
        spec = recipe.pipelines[0].spec
        context = TrialContext(spec, load_data(spec.data), device)
        make = lambda per_class, s: context.source(dataclasses.replace(recipe.config, seed=s), per_class)
    data = context.data
    batch_per_class = max(1, context.spec.cas.batch_size // data.num_classes)
    return Sampler(recipe, make, data.num_classes, data.image_shape, device, seed, context.per_class, batch_per_class)


def load_best(storage, pipeline: str, device="cpu", seed: int | None = None) -> Sampler:
    """A sampler with the pipeline's chosen checkpoint, stddev and threshold (and its filter), on `device`.

    `storage`: a URL or an opened storage; `pipeline`: its name, or a multigen study's (`multigen/A+B`).
    `seed`: where the sampler's seed sequence starts (default: the pipeline's seed).
    """
    return open_sampler(resolve(storage, pipeline), device, seed)
