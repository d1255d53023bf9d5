"""The paper-scale presets in studies/: each loads, validates, carries the paper's recipe and builds its models.

Nothing is downloaded: the data options the presets rely on (Lanczos resize, val merged into train)
are checked on small files made here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gafi_opt.data import load_data
from gafi_opt.errors import GafiError
from gafi_opt.models import build_classifier, build_discriminator, build_generator
from gafi_opt.spec import DataSpec, load_spec

STUDIES = Path(__file__).resolve().parent.parent / "studies"

# preset -> (source, image shape the models see, classes, synthetic images per class, checkpoint grid, threshold grid, generator epochs)
PRESETS = {
    "fashion-mnist": ("fashion-mnist", (1, 32, 32), 10, 5000, (50, 300), (0.0, 0.9), 300),
    "cifar10": ("cifar10", (3, 32, 32), 10, 4000, (150, 500), (0.0, 0.9), 500),
    "cifar100": ("cifar100", (3, 32, 32), 100, 400, (150, 500), (0.0, 0.9), 500),
    "cinic10": ("cinic10", (3, 32, 32), 10, 17000, (150, 500), (0.0, 0.9), 500),
    "dermamnist": ("npz", (3, 32, 32), 7, 1001, (10, 150), (0.0, 0.5), 150),
}


def _grid(start, stop, step):
    return tuple(round(start + i * step, 10) for i in range(int(round((stop - start) / step)) + 1))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_loads_with_the_paper_recipe(name):
    source, _, _, per_class, checkpoints, thresholds, gen_epochs = PRESETS[name]
    spec = load_spec(STUDIES / f"{name}.toml")
    assert spec.name == name and spec.data.source == source and spec.data.root
    assert spec.selection == "val"  # --paper-selection switches to test

    g = spec.generator
    assert (g.arch, g.latent_dim, g.embed_dim, g.width, g.batch_size, g.d_steps) == ("biggan-deep", 128, 128, 512, 192, 3)
    assert (g.lr, g.betas, g.ema_decay, g.ema_start, g.epochs) == (2e-4, (0.5, 0.999), 0.9999, 1000, gen_epochs)

    for part, epochs in (("cas", 100), ("filter", 300)):
        c = getattr(spec, part)
        assert (c.arch, c.width, c.epochs, c.batch_size) == ("resnet20", 64, epochs, 128), part
        assert (c.lr, c.momentum, c.nesterov, c.weight_decay, c.lr_milestones) == (0.1, 0.9, True, 1e-4, (0.6, 0.8)), part
        assert set(c.augment) == {"flip", "crop", "cutout"} and c.crop_padding == 4 and c.cutout_size == 11, part
    # Milestones 0.6 / 0.8 of 100 CAS epochs are the paper's epochs 60 and 80.
    assert sorted(round(m * spec.cas.epochs) for m in spec.cas.lr_milestones) == [60, 80]

    assert spec.synth.samples_per_class == per_class
    assert spec.checkpoint.values == tuple(float(v) for v in range(checkpoints[0], checkpoints[1] + 1, 10))
    assert spec.stddev.values == _grid(1.0, 2.0, 0.05) and len(spec.stddev.values) == 21
    assert spec.threshold.values == _grid(*thresholds, 0.1)
    assert max(spec.checkpoint.values) <= g.epochs
    assert spec.final.recycle_every == 1 and spec.checkpoint.recycle_every == 10


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_models_build_for_its_image_shape(name):
    _, shape, classes, *_ = PRESETS[name]
    spec = load_spec(STUDIES / f"{name}.toml")
    generator = build_generator(spec.generator, shape, classes).eval()
    build_discriminator(spec.generator, shape, classes)
    classifier = build_classifier(spec.cas, shape, classes).eval()
    with torch.inference_mode():
        images = generator(torch.randn(2, spec.generator.latent_dim), torch.tensor([0, classes - 1]))
        logits = classifier(images)
    assert images.shape == (2, *shape) and logits.shape == (2, classes)


def test_presets_match_the_paper_split_sizes():
    """val_fraction carves the official 10,000-image val split out of each train set."""
    import math

    for name, train_size in (("fashion-mnist", 60000), ("cifar10", 50000), ("cifar100", 50000), ("cinic10", 180000)):
        spec = load_spec(STUDIES / f"{name}.toml")
        val = math.ceil(spec.data.val_fraction * train_size)  # how train_test_split sizes a fractional split
        classes = PRESETS[name][2]
        assert val == 10000, name
        assert (train_size - val) // classes == spec.synth.samples_per_class, name


def test_presets_carry_the_papers_published_comparison():
    for name in PRESETS:
        text = (STUDIES / f"{name}.toml").read_text()
        assert "arXiv 2305.10118" in text and "--paper-selection" in text
    published_cas = {"fashion-mnist": "94.03%", "cifar10": "92.60%", "cifar100": "68.92%", "cinic10": "84.37%", "dermamnist": "73.66%"}
    for name, cas in published_cas.items():
        assert f"CAS with one generator is {cas}" in (STUDIES / f"{name}.toml").read_text(), name


# ---------------------------------------------------------------- the data options the presets use


def test_resize_is_lanczos_to_the_requested_side(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for key, n in (("train", 14), ("val", 7), ("test", 7)):
        arrays[f"{key}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{key}_labels"] = (np.arange(n) % 7).reshape(-1, 1)
    path = tmp_path / "derma.npz"
    np.savez(path, **arrays)
    data = load_data(DataSpec(source="npz", root=str(path), image_size=32, resize=True))
    assert data.image_shape == (3, 32, 32) and data.num_classes == 7
    expected = np.asarray(Image.fromarray(arrays["test_images"][3]).resize((32, 32), resample=Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(data.test_x[3].permute(1, 2, 0).numpy(), expected)
    # Resizing keeps the picture's content near the border, where padding would leave zeros.
    padded = load_data(DataSpec(source="npz", root=str(path), image_size=32))
    assert int(padded.train_x[:, :, 0, :].max()) == 0 and int(data.train_x[:, :, 0, :].max()) > 0


def test_resize_needs_a_size(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text('name = "s"\n[data]\nresize = true\n[checkpoint]\nvalues = [1]\n[stddev]\nvalues = [1.0]\n[threshold]\nvalues = [0.0]\n[generator]\nepochs = 1\n')
    with pytest.raises(GafiError, match="data.resize needs data.image_size"):
        load_spec(study)


def test_merge_val_pools_valid_into_train_then_carves_val(tmp_path):
    for split, per_class in (("train", 6), ("valid", 6), ("test", 2)):
        for label in range(3):
            folder = tmp_path / split / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((4, 4, 3), 10 * label + i, dtype=np.uint8)).save(folder / f"{i}.png")
    kept = load_data(DataSpec(source="cinic10", root=str(tmp_path)))
    assert (len(kept.train_y), len(kept.val_y), len(kept.test_y)) == (18, 18, 6)
    merged = load_data(DataSpec(source="cinic10", root=str(tmp_path), merge_val=True, val_fraction=1 / 6))
    assert (len(merged.train_y), len(merged.val_y), len(merged.test_y)) == (30, 6, 6)
    assert np.bincount(merged.val_y.numpy()).tolist() == [2, 2, 2]
    # Every pooled image lands in exactly one of the two splits.
    pooled = sorted(torch.cat([kept.train_x, kept.val_x]).flatten(1).tolist())
    assert sorted(torch.cat([merged.train_x, merged.val_x]).flatten(1).tolist()) == pooled
