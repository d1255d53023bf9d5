"""SyntheticSource: class balance, Expansion Trick, Dynamic Sample Filtering, Dynamic Dataset Recycle."""

import math

import pytest
import torch
from torch import nn

from gafi_opt.data import to_float
from gafi_opt.synth import SyntheticSource


class LatentEcho(nn.Module):
    """A 'generator' whose 4-pixel image is tanh(z[:4] / 4): its pixels reveal the latent stddev."""

    latent_dim = 8
    num_classes = 2

    def forward(self, z, y):
        return torch.tanh(z[:, :4] / 4).view(-1, 1, 2, 2)


class SignFilter(nn.Module):
    """Class 1 when the mean pixel is positive, with confidence sigmoid(8 * mean)."""

    def forward(self, x):
        s = 8 * x.mean(dim=(1, 2, 3))
        return torch.stack([-s / 2, s / 2], dim=1)  # softmax -> [sigmoid(-s), sigmoid(s)]


class OnlyClassZero(nn.Module):
    """A filter that recognises nothing as class 1: that class is never accepted."""

    def forward(self, x):
        return torch.tensor([[5.0, -5.0]]).expand(x.shape[0], 2)


def make(**kwargs):
    defaults = dict(generator=LatentEcho(), num_classes=2, per_class=500, seed=0, batch_size=256)
    defaults.update(kwargs)
    return SyntheticSource(**defaults)


def filter_verdict(images, labels, threshold):
    probs = SignFilter()(to_float(images)).softmax(1)
    p = probs.gather(1, labels[:, None]).squeeze(1)
    return (probs.argmax(1) == labels) & (p > threshold)


def test_class_balanced_and_unfiltered():
    source = make()
    source.fill()
    assert source.images.dtype == torch.uint8 and source.images.shape == (1000, 1, 2, 2)
    assert torch.bincount(source.labels).tolist() == [500, 500]
    assert source.stats.acceptance_rate == 1.0
    assert int(source.stats.generated.sum()) == 1000 and int(source.stats.fallback.sum()) == 0


def test_expansion_trick_scales_latent_stddev():
    def latent_std(stddev):
        source = make(stddev=stddev, per_class=2000)
        source.fill()
        x = to_float(source.images).clamp(-0.999, 0.999)
        return (torch.atanh(x) * 4).std().item()

    narrow, wide = latent_std(1.0), latent_std(2.0)
    assert narrow == pytest.approx(1.0, rel=0.1)
    assert wide / narrow == pytest.approx(2.0, rel=0.1)
    between = latent_std((1.0, 2.0))
    assert narrow < between < wide


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.6])
def test_every_kept_sample_passes_the_filter(threshold):
    source = make(threshold=threshold, filter_model=SignFilter(), max_attempts=20)
    source.fill()
    assert int(source.stats.fallback.sum()) == 0
    assert filter_verdict(source.images, source.labels, threshold).all()


def test_acceptance_rate_matches_the_filter_probability():
    # Class 1 is accepted when mean(tanh(z/4)) > 0 and sigmoid(8 mean) > 0.5, i.e. mean > 0: p = 1/2.
    source = make(threshold=0.5, filter_model=SignFilter(), per_class=4000)
    source.fill()
    assert source.stats.acceptance_rate == pytest.approx(0.5, abs=0.03)
    # A higher threshold accepts fewer samples.
    strict = make(threshold=0.9, filter_model=SignFilter(), per_class=4000)
    strict.fill()
    assert strict.stats.acceptance_rate < source.stats.acceptance_rate


def test_class_never_accepted_ends_and_fills_honestly():
    source = make(threshold=0.0, filter_model=OnlyClassZero(), max_attempts=3, per_class=100)
    source.fill()
    fallback = source.stats.fallback.tolist()
    assert fallback == [0, 100]  # every class-1 slot fell back; class 0 was always accepted
    assert source.stats.per_class_acceptance()[1] == 0.0
    assert source.stats.per_class_acceptance()[0] == 1.0
    class_one = source.images[source.labels == 1].view(100, -1)
    assert torch.unique(class_one, dim=0).shape[0] > 90  # fresh samples, not copies of one image
    assert source.stats.acceptance_rate < 1.0


def test_recycle_renews_the_requested_share():
    source = make(per_class=1000)
    source.fill()
    before = source.images.clone()
    labels = source.labels.clone()
    source.recycle(0.25)
    changed = (source.images != before).flatten(1).any(1).float().mean().item()
    assert changed == pytest.approx(0.25, abs=0.03)
    assert torch.equal(source.labels, labels)
    source.recycle(1.0)
    assert (source.images != before).flatten(1).any(1).float().mean().item() > 0.95


def test_same_seed_same_set():
    a, b = make(threshold=0.5, filter_model=SignFilter()), make(threshold=0.5, filter_model=SignFilter())
    a.fill(), b.fill()
    assert torch.equal(a.images, b.images)


def test_a_threshold_inside_the_same_set_range_draws_the_same_set():
    source = make(threshold=0.6, filter_model=SignFilter(), per_class=200)
    source.fill(), source.recycle(0.5)
    low, high = source.same_set_thresholds
    assert low <= 0.6 < high < 1.0
    inside = make(threshold=(0.6 + high) / 2, filter_model=SignFilter(), per_class=200)
    inside.fill(), inside.recycle(0.5)
    assert torch.equal(inside.images, source.images) and inside.stats.acceptance_rate == source.stats.acceptance_rate
    outside = make(threshold=high, filter_model=SignFilter(), per_class=200)  # rejects a sample the first accepted
    outside.fill(), outside.recycle(0.5)
    assert not torch.equal(outside.images, source.images)
    assert make().same_set_thresholds is None  # unfiltered


def test_bad_arguments():
    with pytest.raises(ValueError, match="threshold"):
        make(threshold=1.0, filter_model=SignFilter())
    with pytest.raises(ValueError, match="stddev"):
        make(stddev=0.0)
    with pytest.raises(ValueError, match="filter"):
        make(threshold=0.5)


def test_oversampling_bounds_rounds():
    # With 1/2 acceptance the second round draws about two candidates per missing slot.
    source = make(threshold=0.5, filter_model=SignFilter(), per_class=1000)
    source.fill()
    generated = int(source.stats.generated.sum())
    assert generated < 2000 * 4  # bounded work, no runaway loop
    assert math.isclose(source.stats.acceptance_rate, 0.5, abs_tol=0.05)
