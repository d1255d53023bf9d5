"""Several synthetic sets as one: multigen draws every class's share from each of K generators."""

from __future__ import annotations

import torch

from gafi_opt.synth.source import SynthesisStats, SyntheticSource


class MultiSource:
    """Several SyntheticSources as one class-balanced set: images and labels concatenated."""

    def __init__(self, sources: list[SyntheticSource]):
        if not sources:
            raise ValueError("MultiSource needs at least one source")
        self.sources = sources
        self.num_classes = sources[0].num_classes
        self.labels = torch.cat([s.labels for s in sources])
        self._images: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.labels.numel()

    @property
    def images(self) -> torch.Tensor | None:
        if self._images is None and all(s.images is not None for s in self.sources):
            self._images = torch.cat([s.images for s in self.sources])
        return self._images

    @property
    def stats(self) -> SynthesisStats:
        parts = [s.stats for s in self.sources]
        return SynthesisStats(*(sum(getattr(p, key) for p in parts) for key in ("generated", "accepted", "fallback")))

    @property
    def filled(self) -> int:
        return sum(s.filled for s in self.sources)

    def fill(self, progress: bool = False) -> None:
        for source in self.sources:
            source.fill(progress=progress)
        self._images = None

    def recycle(self, fraction: float = 1.0) -> None:
        for source in self.sources:
            source.recycle(fraction)
        self._images = None
