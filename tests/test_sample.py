"""`gafi-opt sample`: the synthetic set a pipeline's choices make, as an .npz or an image folder, with its sidecar."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import DIGITS, assert_user_error, tiny_overrides
from torchvision.datasets import ImageFolder

import gafi_opt
from gafi_opt.cas import TrialContext
from gafi_opt.cli import main
from gafi_opt.data import load_data
from gafi_opt.pipeline import Pipeline
from gafi_opt.search.stages import SEARCHED, search_seed
from gafi_opt.spec import DataSpec, load_spec
from gafi_opt.train.classifier import ClassifierTrainer


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def sample(url, name, out, *extra):
    result = invoke("sample", "--storage", url, "--pipeline", name, "-o", out, "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def chosen(tiny_pipeline):
    """The tiny pipeline's choice and a context that draws with it (the same code the trials ran)."""
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    context = TrialContext(spec, load_data(spec.data), torch.device("cpu"))
    return pipeline, context


def trial_draw(context, stage, params, fixed, seed, per_class):
    """The first set a trial of `stage` with these values draws, through the trials' own code."""
    from gafi_opt.search.stages import trial_config

    config = dataclasses.replace(trial_config(stage, params, fixed, context.spec), seed=seed)
    source = context.source(config, per_class)
    source.fill()
    return source.images, source.labels


def test_npz_holds_the_chosen_set_reloads_as_a_data_source_and_trains_a_classifier(tiny_pipeline, chosen, tmp_path):
    spec, url = tiny_pipeline
    pipeline, context = chosen
    out = tmp_path / "synthetic.npz"
    printed = sample(url, spec.name, out, "--per-class", 30, "--seed", 7).output
    assert "wrote 300 images (30 per class)" in printed

    sidecar = json.loads((tmp_path / "synthetic.npz.json").read_text())
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not the temporary file's private mode
    best = {stage: pipeline.best_value(stage) for stage in ("checkpoint", "stddev", "threshold")}
    assert {k: sidecar[k] for k in best} == best and sidecar["filter"] is True
    assert sidecar["pipeline"] == spec.name and sidecar["recipe"] == "final choice" and sidecar["seed"] == 7
    assert sidecar["gafi_opt_version"] == gafi_opt.__version__ and sidecar["images"] == 300 and sidecar["format"] == "npz"
    assert 0.0 <= sidecar["acceptance_rate"] <= 1.0 and 0 <= sidecar["fallback_samples"] <= 300
    assert sidecar["acceptance_rate"] > 0 or sidecar["fallback_samples"] == 300  # a tiny filter may accept nothing

    with np.load(out) as archive:
        assert sorted(archive.files) == ["train_images", "train_labels"]
        images, labels = archive["train_images"], archive["train_labels"]
    assert images.dtype == np.uint8 and images.shape == (300, 8, 8)  # grey: NHW, as MedMNIST
    assert labels.shape == (300, 1) and np.bincount(labels[:, 0]).tolist() == [30] * 10
    # Exactly the set a final-stage trial with this seed draws first: the chosen knobs, the pipeline's filter.
    fixed = pipeline.layout(pipeline.stage_study("final"), "final")["fixed"]
    expected, expected_labels = trial_draw(context, "final", 7, fixed, seed=7, per_class=30)
    assert torch.equal(torch.from_numpy(images), expected[:, 0]) and torch.equal(torch.from_numpy(labels[:, 0]).long(), expected_labels)

    # The project's own npz source reads it (val and test carved from it), and a classifier trains on it.
    data = load_data(DataSpec(source="npz", root=str(out)))
    assert data.image_shape == (1, 8, 8) and data.num_classes == 10 and len(data.train_y) + len(data.val_y) + len(data.test_y) == 300
    trainer = ClassifierTrainer(spec.cas, data.image_shape, data.num_classes, torch.device("cpu"), seed=0)
    losses = [trainer.train_epoch(data.train_x, data.train_y) for _ in range(8)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert 0.0 <= trainer.evaluate(context.val[0], context.val[1]) <= 1.0  # and it classifies real digits


def test_folder_opens_with_image_folder_and_holds_the_same_set(tiny_pipeline, tmp_path):
    spec, url = tiny_pipeline
    sample(url, spec.name, tmp_path / "set.npz", "--per-class", 4)
    sample(url, spec.name, tmp_path / "folder", "--per-class", 4, "--format", "folder")
    dataset = ImageFolder(str(tmp_path / "folder"))
    assert dataset.classes == [str(c) for c in range(10)] and dataset.class_to_idx == {str(c): c for c in range(10)}
    assert len(dataset) == 40 and dataset.targets == [c for c in range(10) for _ in range(4)]
    with np.load(tmp_path / "set.npz") as archive:
        expected = archive["train_images"]
    for index, (image, target) in enumerate(dataset):
        assert image.size == (8, 8) and np.array_equal(np.asarray(image.convert("L")), expected[index])
    sidecar = json.loads((tmp_path / "folder" / "sample.json").read_text())
    assert sidecar["format"] == "folder" and sidecar["images"] == 40 and sidecar["per_class"] == 4


def test_default_per_class_is_the_pipelines_set_size_and_force_replaces(tiny_pipeline, tmp_path):
    spec, url = tiny_pipeline
    out = tmp_path / "set.npz"
    sample(url, spec.name, out)
    with np.load(out) as archive:
        assert len(archive["train_labels"]) == 10 * spec.synth.samples_per_class
    sample(url, spec.name, out, "--per-class", 2, "--force")
    with np.load(out) as archive:
        assert len(archive["train_labels"]) == 20
    sample(url, spec.name, tmp_path / "folder", "--per-class", 2, "--format", "folder")
    sample(url, spec.name, tmp_path / "folder", "--per-class", 3, "--format", "folder", "--force")
    assert len(ImageFolder(str(tmp_path / "folder"))) == 30


def test_a_trials_recipe_at_its_own_seed_draws_the_set_it_first_trained_on(tiny_pipeline, chosen, tmp_path):
    spec, url = tiny_pipeline
    pipeline, context = chosen
    study = pipeline.stage_study("stddev")
    trial = max(study.get_trials(deepcopy=False), key=lambda t: t.number)
    out = tmp_path / "trial.npz"
    sample(url, spec.name, out, "--stage", "stddev", "--trial", trial.number)
    sidecar = json.loads((tmp_path / "trial.npz.json").read_text())
    assert sidecar["recipe"] == f"stddev stage, trial {trial.number}"
    assert sidecar["stddev"] == trial.params["stddev"] and sidecar["threshold"] == 0.0 and sidecar["seed"] == search_seed(spec, "stddev")
    assert sidecar["checkpoint"] == pipeline.best_value("checkpoint")
    fixed = pipeline.layout(study, "stddev")["fixed"]
    expected, _ = trial_draw(context, "stddev", trial.params[SEARCHED["stddev"]], fixed, seed=search_seed(spec, "stddev"), per_class=context.per_class)
    with np.load(out) as archive:
        assert np.array_equal(archive["train_images"], expected[:, 0].numpy())
    # The synthetic baseline's recipe: no filter at all.
    sample(url, spec.name, tmp_path / "baseline.npz", "--stage", "baseline", "--trial", 0, "--per-class", 2)
    assert json.loads((tmp_path / "baseline.npz.json").read_text())["filter"] is False


def test_bad_input_is_one_line(tiny_pipeline, tmp_path):
    spec, url = tiny_pipeline
    out = tmp_path / "x.npz"

    def run(*extra, name=spec.name, storage=url):
        return invoke("sample", "--storage", storage, "--pipeline", name, "-o", out, "--quiet", *extra)

    assert_user_error(run(name="absent"), "no pipeline 'absent'")
    assert_user_error(run("--stage", "nowhere", "--trial", 0), "unknown stage 'nowhere'")
    assert_user_error(run("--stage", "checkpoint", "--trial", 99), "no trial 99 in the checkpoint stage")
    assert_user_error(run("--stage", "checkpoint"), "--stage and --trial go together")
    assert_user_error(run("--per-class", 0), "--per-class", "0 is not in the range")
    assert_user_error(run(name="multigen/absent"), "no multigen study 'multigen/absent'")
    assert_user_error(run(storage=f"sqlite:///{tmp_path / 'absent.db'}"), "absent.db")
    out.write_bytes(b"mine")
    assert_user_error(run(), f"{out} exists", "--force")
    assert out.read_bytes() == b"mine"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("precious")
    result = invoke("sample", "--storage", url, "--pipeline", spec.name, "-o", tmp_path / "mine", "--format", "folder", "--force", "--quiet")
    assert_user_error(result, "not a sample folder gafi-opt wrote")
    assert (tmp_path / "mine" / "keep.txt").read_text() == "precious"

    # A pipeline with no best yet (in a copy of the storage, so the shared one stays as it is).
    copy = tmp_path / "copy.db"
    with sqlite3.connect(spec.run_path / "gafi.db") as source, sqlite3.connect(copy) as target:
        source.backup(target)
    Pipeline.create_or_load(load_spec(DIGITS, [*tiny_overrides(spec.run_path), "name=unfinished"]), f"sqlite:///{copy}")
    out.unlink()
    assert_user_error(run(name="unfinished", storage=f"sqlite:///{copy}"), "pipeline 'unfinished' has no best yet")
    assert not out.exists()
