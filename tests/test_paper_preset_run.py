"""The CIFAR-10 preset's code path end to end on a CPU: BigGAN-deep + ResNet-20 through every stage.

The data is not CIFAR-10 (tests never download): it is scikit-learn's digits painted as 32x32 RGB
images in an image folder (benchmarks/digits_rgb_folder.py), and the models are tiny. What is
checked is that the preset's pipeline runs as shipped, with paper (test) selection.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import optuna
import pytest
import torch
from click.testing import CliRunner
from torch.nn.utils import parametrize

from gafi_opt.cli import main
from gafi_opt.models.biggan import BigGANDeepGenerator
from gafi_opt.models.checkpoints import load_generator, require_checkpoints
from gafi_opt.pipeline import Pipeline
from gafi_opt.search.stages import STAGES
from gafi_opt.spec import PAPER_SELECTION, load_spec

ROOT = Path(__file__).resolve().parent.parent
CIFAR10 = ROOT / "studies" / "cifar10.toml"

# The preset's models at tiny widths, two points per grid, one seed. The small synthetic set and a
# single filtering round keep generation cheap: an untrained generator's samples are mostly rejected.
TINY_CIFAR = [
    "data.source=folder",
    "generator.width=32",
    "generator.epochs=2",
    "generator.batch_size=32",
    "filter.width=8",
    "filter.epochs=2",
    "cas.width=8",
    "cas.epochs=2",
    "synth.samples_per_class=8",
    "synth.max_attempts=1",
    "checkpoint.values=[1, 2]",
    "stddev.values=[1.0, 1.5]",
    "threshold.values=[0.0, 0.5]",
    "final.seeds=1",
]


def _folder_maker():
    spec = importlib.util.spec_from_file_location("digits_rgb_folder", ROOT / "benchmarks" / "digits_rgb_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_folder


@pytest.fixture(scope="module")
def tiny_cifar_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar-like")
    _folder_maker()(root / "data", per_class=(24, 8, 8))
    overrides = [*TINY_CIFAR, f"data.root={root / 'data'}", "name=tiny-cifar", f"run_dir={root / 'run'}"]
    url = f"sqlite:///{root / 'gafi.db'}"
    args = ["run", str(CIFAR10), "--paper-selection", "--quiet", "--storage", url] + [a for o in overrides for a in ("--set", o)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return load_spec(CIFAR10, overrides + PAPER_SELECTION), url, result.output


@pytest.mark.slow
def test_cifar10_preset_runs_every_stage_with_biggan_deep_and_resnet20(tiny_cifar_run):
    spec, url, output = tiny_cifar_run
    pipeline = Pipeline.load(url, "tiny-cifar")
    assert pipeline.current_stage() is None
    assert pipeline.spec == spec and spec.selection == "test"
    assert (spec.generator.arch, spec.cas.arch, spec.filter.arch) == ("biggan-deep", "resnet20", "resnet20")
    for stage in STAGES:
        assert pipeline.finished_trials(stage), stage
    # Paper selection: each stage's choice is its best complete trial by TEST accuracy.
    for stage in ("checkpoint", "stddev", "threshold"):
        complete = [t for t in pipeline.finished_trials(stage) if t.state == optuna.trial.TrialState.COMPLETE]
        assert pipeline.best_trial(stage).user_attrs["test_acc"] == max(t.user_attrs["test_acc"] for t in complete)
    # The checkpoints are BigGAN-deep generators (spectral norm, 32x32 RGB) for the 10 folder classes.
    path = require_checkpoints(spec, [2])[2]
    generator = load_generator(spec, path, (3, 32, 32), 10)
    assert isinstance(generator, BigGANDeepGenerator) and parametrize.is_parametrized(generator.linear, "weight")
    with torch.inference_mode():
        assert generator(torch.randn(2, 128), torch.tensor([0, 9])).shape == (2, 3, 32, 32)
    assert "(test-selected)" in output


@pytest.mark.slow
def test_paper_selected_rows_are_marked_in_every_export(tiny_cifar_run):
    _, url, _ = tiny_cifar_run
    (row,) = json.loads(CliRunner().invoke(main, ["export", "--storage", url, "--format", "json"]).stdout)
    assert row["selection"] == "test" and row["pipeline"] == "tiny-cifar" and row["dataset"] == "data"
    assert row["checkpoint"] in (1, 2) and row["stddev"] in (1.0, 1.5) and row["threshold"] in (0.0, 0.5)
    assert 0.0 <= row["cas_test"] <= 1.0
    markdown = CliRunner().invoke(main, ["export", "--storage", url]).output
    assert "(test-selected)" in markdown
    latex = CliRunner().invoke(main, ["export", "--storage", url, "--format", "latex"]).output
    assert r"$^\dagger$" in latex
