"""Dynamic Sample Filtering written the way the official GaFi code does it: the yardstick.

A Python loop over classes; for each class, generate the missing count, filter that batch,
keep what passes, then generate twice the (new) missing count, and so on; every verdict
goes back to the host. It is kept (bounded by `max_attempts`, then filled with unfiltered
samples, like `SyntheticSource`) only so that tests and `benchmarks/synthesis_bench.py`
can check the batched path against it: same filter rule, same statistics, more speed.
"""

from __future__ import annotations

import torch
from torch import nn

from gafi_opt.data import to_float, to_uint8
from gafi_opt.synth import SynthesisStats


@torch.no_grad()
def reference_synthesis(
    generator: nn.Module,
    filter_model: nn.Module | None,
    num_classes: int,
    per_class: int,
    stddev: float = 1.0,
    threshold: float | None = None,
    max_attempts: int = 10,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, SynthesisStats]:
    """Returns (uint8 images, labels, stats) with the images of each class together."""
    device = torch.device(device)
    generator = generator.to(device).eval()
    if filter_model is not None:
        filter_model = filter_model.to(device).eval()
    torch.manual_seed(seed)
    stats = SynthesisStats.zeros(num_classes, "cpu")
    all_images, all_labels = [], []
    for c in range(num_classes):
        kept: list[torch.Tensor] = []
        have, attempts = 0, 0
        request = per_class
        while have < per_class:
            if threshold is not None and attempts == max_attempts:
                fallback = _generate(generator, c, per_class - have, stddev, batch_size, device).cpu()
                kept.append(fallback)
                stats.fallback[c] += fallback.shape[0]
                break
            images = _generate(generator, c, request, stddev, batch_size, device)
            keep = _verdict(filter_model, images, c, threshold, batch_size).cpu()  # host round trip
            accepted = images.cpu()[keep]
            stats.generated[c] += images.shape[0]
            stats.accepted[c] += int(keep.sum())
            kept.append(accepted[: per_class - have])
            have += kept[-1].shape[0]
            attempts += 1
            request = 2 * (per_class - have)
        all_images.append(torch.cat(kept))
        all_labels.append(torch.full((per_class,), c, dtype=torch.long))
    return torch.cat(all_images).to(device), torch.cat(all_labels).to(device), stats


def _generate(generator, c: int, count: int, stddev: float, batch_size: int, device) -> torch.Tensor:
    out = []
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        z = torch.randn(n, generator.latent_dim, device=device) * stddev
        y = torch.full((n,), c, dtype=torch.long, device=device)
        out.append(to_uint8(generator(z, y).float()))
    return torch.cat(out)


def _verdict(filter_model, images: torch.Tensor, c: int, threshold: float | None, batch_size: int) -> torch.Tensor:
    if threshold is None:
        return torch.ones(images.shape[0], dtype=torch.bool)
    keep = []
    for start in range(0, images.shape[0], batch_size):  # each batch filtered on its own
        probs = filter_model(to_float(images[start : start + batch_size])).float().softmax(1)
        keep.append(((probs.argmax(1) == c) & (probs[:, c] > threshold)).cpu())
    return torch.cat(keep)
