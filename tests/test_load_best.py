"""`gafi_opt.load_best`: fresh filtered, class-balanced batches with a finished pipeline's chosen knobs."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest
import torch
from conftest import ROOT

import gafi_opt
from gafi_opt.cas import TrialContext
from gafi_opt.data import load_data
from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline
from gafi_opt.search.stages import trial_config


@pytest.fixture(scope="module")
def best(tiny_pipeline):
    spec, url = tiny_pipeline
    return gafi_opt.load_best(url, spec.name, device="cpu")


def test_the_chosen_knobs_and_the_trials_own_draws(tiny_pipeline, best):
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    config = best.recipe.config
    assert (config.checkpoint, config.stddev, config.threshold) == tuple(pipeline.best_value(s) for s in ("checkpoint", "stddev", "threshold"))
    assert best.per_class == spec.synth.samples_per_class and best.num_classes == 10 and best.image_shape == (1, 8, 8)

    # A sampler with seed s draws first what a final-stage trial with seed s draws: same generator, stddev, filter.
    fixed = pipeline.layout(pipeline.stage_study("final"), "final")["fixed"]
    context = TrialContext(spec, load_data(spec.data), torch.device("cpu"))
    source = context.source(dataclasses.replace(trial_config("final", 5, fixed, spec), seed=5), per_class=6)
    source.fill()
    images, labels = gafi_opt.load_best(url, spec.name, seed=5).sample(6)
    assert images.dtype == torch.uint8 and torch.equal(images, source.images) and torch.equal(labels, source.labels)


def test_batches_are_class_balanced_shuffled_and_fresh(best):
    batches = list(best.batches(per_class=5, count=3))
    assert len(batches) == 3
    for images, labels in batches:
        assert images.shape == (50, 1, 8, 8) and images.dtype == torch.float32 and images.device.type == "cpu"
        assert -1.0 <= float(images.min()) and float(images.max()) <= 1.0
        assert torch.bincount(labels, minlength=10).tolist() == [5] * 10
        assert not torch.equal(labels, labels.sort().values)  # shuffled, not class by class
    assert not torch.equal(batches[0][0], batches[1][0])  # each batch a new draw
    as_uint8, labels = next(best.batches(per_class=2, dtype=torch.uint8))
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == (20, 1, 8, 8)
    # Iterating the sampler itself: batches of the CAS batch size split over the classes, without end.
    images, labels = next(iter(best))
    assert best.batch_per_class == 128 // 10  # the CAS batch size of the spec
    assert torch.bincount(labels).tolist() == [best.batch_per_class] * 10 and len(images) == 10 * best.batch_per_class


def test_sample_is_a_fresh_set_and_a_seed_repeats_it(tiny_pipeline, best):
    spec, url = tiny_pipeline
    first, labels = best.sample(3)
    second, _ = best.sample(3)
    assert labels.tolist() == [c for c in range(10) for _ in range(3)] and not torch.equal(first, second)
    again = gafi_opt.load_best(url, spec.name, seed=best.seed)
    assert torch.equal(again.sample(4)[0], gafi_opt.load_best(url, spec.name, seed=best.seed).sample(4)[0])
    stats = best.stats
    # The tiny filter (2 epochs) may accept nothing at the chosen threshold: then every slot is fallback.
    assert int(stats.generated.sum()) > 0 and int(stats.generated.sum()) >= int(stats.accepted.sum()) and 0.0 <= best.acceptance_rate <= 1.0
    assert best.fallback == int(stats.fallback.sum()) and (best.acceptance_rate > 0 or best.fallback > 0)
    with pytest.raises(GafiError, match="images per class must be >= 1"):
        best.sample(0)


def test_unknown_or_unfinished_pipelines_are_refused(tiny_pipeline):
    _, url = tiny_pipeline
    with pytest.raises(GafiError, match="no pipeline 'absent'"):
        gafi_opt.load_best(url, "absent")


def readme_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    return next(block for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL) if "load_best" in block)


def test_the_readme_example_runs(tiny_pipeline, capsys):
    spec, url = tiny_pipeline
    code = readme_example()
    for text in ('"sqlite:///runs/digits/gafi.db"', '"digits"', "islice(best, 200)", "best.sample(500)"):
        assert text in code, text
    code = code.replace('"sqlite:///runs/digits/gafi.db"', repr(url)).replace('"digits"', repr(spec.name))
    code = code.replace("islice(best, 200)", "islice(best, 3)").replace("best.sample(500)", "best.sample(5)")
    namespace: dict = {"itertools": itertools}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["images"].shape == (50, 1, 8, 8) and namespace["images"].dtype == torch.uint8
    assert f"{spec.name} (final choice): checkpoint" in capsys.readouterr().out
