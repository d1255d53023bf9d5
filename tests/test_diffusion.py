"""Diffusion generators: the trainer (checkpoints, exact resume), sampling (guidance, samplers, the initial-noise
scale), a bring-your-own UNet2DModel folder and its misfits, and a whole tiny diffusion pipeline through the CLI."""

from __future__ import annotations

import json
import re

import optuna
import pytest
import torch
from click.testing import CliRunner
from conftest import ROOT
from diffusers import UNet2DModel
from optuna.trial import TrialState

from gafi_opt.cli import main
from gafi_opt.data import load_data
from gafi_opt.errors import GafiError
from gafi_opt.models import build_generator
from gafi_opt.models.checkpoints import checkpoint_paths, load_generator
from gafi_opt.models.diffusion import DiffusionGenerator
from gafi_opt.pipeline import Pipeline
from gafi_opt.report.figures import pipeline_figures
from gafi_opt.runner import check_checkpoints
from gafi_opt.search.stages import pipeline_stages, search_seed
from gafi_opt.spec import load_spec
from gafi_opt.synth import SyntheticSource
from gafi_opt.train.diffusion import train_diffusion
from gafi_opt.train.generator import train_generator

PRESET = ROOT / "studies" / "digits-diffusion.toml"

# A whole diffusion pipeline in well under a minute: a 8/16-channel UNet, few epochs, steps and images, two points per grid.
TINY = [
    "generator.epochs=3",
    "generator.width=8",
    "generator.diffusion.steps=2",
    "filter.epochs=2",
    "filter.width=8",
    "cas.epochs=2",
    "cas.width=8",
    "checkpoint.values=[2, 3]",
    "sampler.values=['dpm-solver', 'ddim']",
    "guidance.values=[0.0, 1.0]",
    "steps.values=[1, 2]",
    "stddev.values=[1.0, 1.2]",
    "threshold.values=[0.0, 0.5]",
    "final.seeds=2",
    "synth.samples_per_class=10",
]


def tiny(run_dir, *extra, name="tiny-diffusion"):
    return load_spec(PRESET, [*TINY, f"name={name}", f"run_dir={run_dir}", *extra])


@pytest.fixture(scope="module")
def data():
    return load_data(tiny("unused").data)


def tiny_unet(num_class_embeds=11, sample_size=8, channels=1, **config):
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=sample_size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
        add_attention=False, num_class_embeds=num_class_embeds, **config,
    )  # fmt: skip


# ---------------------------------------------------------------- training


def test_trainer_keeps_one_checkpoint_per_epoch_and_resumes_exactly(tmp_path, data):
    straight = tiny(tmp_path / "a")
    assert train_generator(straight, data, torch.device("cpu"), seed=1, progress=False) == 3  # dispatched by arch
    assert sorted(checkpoint_paths(straight)) == [1, 2, 3]
    assert (tmp_path / "a" / "generator" / "epoch_0003.pt").is_file()  # the GAN's place and format

    interrupted = tiny(tmp_path / "b", "generator.epochs=2", "checkpoint.values=[1, 2]")
    train_diffusion(interrupted, data, torch.device("cpu"), seed=1, progress=False)
    first_two = {e: p.read_bytes() for e, p in checkpoint_paths(interrupted).items()}
    resumed = tiny(tmp_path / "b")
    assert train_diffusion(resumed, data, torch.device("cpu"), seed=1, progress=False) == 3
    paths = checkpoint_paths(resumed)
    assert {e: paths[e].read_bytes() for e in (1, 2)} == first_two  # earlier epochs untouched

    a = load_generator(straight, checkpoint_paths(straight)[3], data.image_shape, data.num_classes)
    b = load_generator(resumed, paths[3], data.image_shape, data.num_classes)
    assert isinstance(a, DiffusionGenerator) and not a.training
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name  # resuming gives the same weights as never stopping
    fresh = build_generator(straight.generator, data.image_shape, data.num_classes)
    assert any(not torch.equal(p, q) for p, q in zip(fresh.state_dict().values(), a.state_dict().values()))  # it did train


def test_a_gan_training_state_is_not_resumed_as_diffusion(tmp_path, data):
    gan = load_spec(ROOT / "studies" / "digits.toml", ["generator.epochs=1", "generator.width=8", "checkpoint.values=[1]", f"run_dir={tmp_path}"])
    train_generator(gan, data, torch.device("cpu"), progress=False)
    with pytest.raises(GafiError, match="not a diffusion generator's training state"):
        train_diffusion(tiny(tmp_path), data, torch.device("cpu"), progress=False)


# ---------------------------------------------------------------- sampling


def _generator(**knobs) -> DiffusionGenerator:
    spec = tiny("unused")
    torch.manual_seed(3)
    generator = build_generator(spec.generator, (1, 8, 8), 10).eval()
    generator.configure(**knobs)
    return generator


def _draw(generator, stddev=1.0, n=20):
    z = torch.randn(n, generator.latent_dim, generator=torch.Generator().manual_seed(7)) * stddev
    with torch.inference_mode():
        return generator(z, torch.arange(n) % 10)


def test_guidance_zero_and_positive_give_different_samples():
    generator = _generator(sampler="ddim", steps=4, guidance=0.0)
    plain = _draw(generator)
    generator.configure(guidance=2.0)
    guided = _draw(generator)
    assert (plain - guided).abs().max() > 1e-3
    # Guidance pushes away from the unconditional prediction: with the null label's embedding made equal to
    # every class's, conditional and unconditional agree and any guidance scale gives the plain samples.
    with torch.no_grad():
        generator.unet.class_embedding.weight.copy_(generator.unet.class_embedding.weight[0].expand(11, -1))
    same = _draw(generator)
    generator.configure(guidance=0.0)
    assert torch.allclose(same, _draw(generator), atol=1e-5)


def test_guided_prediction_is_the_classifier_free_formula():
    generator = _generator(guidance=1.5)
    x, t, labels = torch.randn(4, 1, 8, 8), torch.tensor(500), torch.tensor([0, 3, 7, 9])
    with torch.inference_mode():
        conditional = generator.unet(x, t, class_labels=labels).sample
        unconditional = generator.unet(x, t, class_labels=torch.full_like(labels, 10)).sample  # index 10: no class
        assert torch.allclose(generator.predict(x, t, labels), 2.5 * conditional - 1.5 * unconditional, atol=1e-5)


def test_velocity_prediction_trains_and_samples(tmp_path, data):
    spec = tiny(tmp_path, "generator.epochs=1", "checkpoint.values=[1]", "generator.diffusion.prediction_type=v_prediction")
    train_diffusion(spec, data, torch.device("cpu"), progress=False)
    generator = load_generator(spec, checkpoint_paths(spec)[1], data.image_shape, data.num_classes)
    assert generator.schedule["prediction_type"] == "v_prediction"
    images = _draw(generator)
    assert torch.isfinite(images).all() and images.abs().max() <= 1


@pytest.mark.parametrize("sampler", ["ddim", "dpm-solver", "ddpm"])
def test_every_sampler_is_a_function_of_its_noise_in_range(sampler):
    generator = _generator(sampler=sampler, steps=3)
    first, again = _draw(generator), _draw(generator)
    assert first.shape == (20, 1, 8, 8) and first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, again)  # ddpm too: its per-step noise is seeded by the initial noise
    assert not torch.equal(first, _draw(generator, stddev=1.5))  # the initial-noise scale is the stddev knob
    generator.configure(steps=5)
    assert not torch.equal(first, _draw(generator))


def test_samplers_differ_and_bad_knobs_are_refused():
    outputs = {s: _draw(_generator(sampler=s, steps=3)) for s in ("ddim", "dpm-solver", "ddpm")}
    assert not torch.equal(outputs["ddim"], outputs["dpm-solver"]) and not torch.equal(outputs["ddim"], outputs["ddpm"])
    generator = _generator()
    for knobs, message in (({"sampler": "euler"}, "unknown sampler 'euler'"), ({"steps": 0}, "steps must be >= 1"), ({"guidance": -1}, "guidance must be >= 0")):
        with pytest.raises(GafiError, match=message):
            generator.configure(**knobs)


def test_synthetic_source_fills_filters_and_recycles_a_diffusion_generator():
    generator = _generator(steps=2, guidance=1.0)

    class PixelMeanFilter(torch.nn.Module):
        """Class 0 when the mean pixel is below 0, else class 1..9 alike: rejects some samples of every class."""

        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))
            return torch.cat([-8 * m[:, None], 8 * m[:, None].expand(-1, 9)], dim=1)

    source = SyntheticSource(generator, 10, 6, stddev=1.1, threshold=0.1, filter_model=PixelMeanFilter(), max_attempts=3, batch_size=32, seed=5)
    source.fill()
    assert source.images.shape == (60, 1, 8, 8) and torch.bincount(source.labels).tolist() == [6] * 10
    assert 0 < source.stats.acceptance_rate <= 1
    before = source.images.clone()
    source.recycle(0.5)
    assert (source.images != before).flatten(1).any(1).sum() > 0
    again = SyntheticSource(generator, 10, 6, stddev=1.1, threshold=0.1, filter_model=PixelMeanFilter(), max_attempts=3, batch_size=32, seed=5)
    again.fill()
    assert torch.equal(again.images, before)  # a seeded source is reproducible


# ---------------------------------------------------------------- bring your own


def _byo_spec(tmp_path, folder, *extra):
    return tiny(tmp_path / "run", f"generator.checkpoints={folder}", "checkpoint.values=[1]", *extra, name="byo-diffusion")


def test_a_saved_unet_folder_is_checkpoint_one_and_passes_the_check(tmp_path, data):
    folder = tmp_path / "my-unet"
    tiny_unet().save_pretrained(folder)
    spec = _byo_spec(tmp_path, folder)
    assert checkpoint_paths(spec) == {1: folder}
    check_checkpoints(spec, data, "cpu")
    generator = load_generator(spec, folder, data.image_shape, data.num_classes)
    saved = tiny_unet().state_dict()
    assert all(torch.equal(saved[k], v) for k, v in generator.unet.state_dict().items())


def test_a_pipeline_folder_brings_its_noise_schedule_and_numbered_folders_are_checkpoints(tmp_path, data):
    from diffusers import DDPMScheduler

    for step in (500, 1000):
        tiny_unet().save_pretrained(tmp_path / "mine" / f"checkpoint-{step}" / "unet")
        DDPMScheduler(num_train_timesteps=400, beta_schedule="linear", prediction_type="v_prediction").save_pretrained(
            tmp_path / "mine" / f"checkpoint-{step}" / "scheduler"
        )
    spec = _byo_spec(tmp_path, tmp_path / "mine", "checkpoint.values=[500, 1000]")
    assert sorted(checkpoint_paths(spec)) == [500, 1000]
    generator = load_generator(spec, checkpoint_paths(spec)[1000], data.image_shape, data.num_classes)
    assert generator.schedule == {"num_train_timesteps": 400, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                                  "trained_betas": None, "prediction_type": "v_prediction"}  # fmt: skip
    check_checkpoints(spec, data, "cpu")


def _misfit(folder):
    """Each maker writes a folder that does not fit 8x8 grey digits with 10 classes."""

    def config_edit(**changes):
        tiny_unet().save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        config.update(changes)
        (folder / "config.json").write_text(json.dumps(config))

    return {
        "classes": (lambda: tiny_unet(num_class_embeds=10).save_pretrained(folder), r"has 10 class embeddings; the data has 10 classes, so it needs 11"),
        "unconditional": (lambda: tiny_unet(num_class_embeds=None).save_pretrained(folder), "is not class-conditional"),
        "side": (lambda: tiny_unet(sample_size=16).save_pretrained(folder), r"makes 1x16x16 images .* the data's are 1x8x8"),
        "channels": (lambda: tiny_unet(channels=3).save_pretrained(folder), r"makes 3x8x8 images .* the data's are 1x8x8"),
        "pickled": (lambda: tiny_unet().save_pretrained(folder, safe_serialization=False), r"holds only pickled weights \(diffusion_pytorch_model.bin\)"),
        "corrupt": (lambda: (tiny_unet().save_pretrained(folder), (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")),
                    "cannot read .*diffusion_pytorch_model.safetensors"),
        "other model": (lambda: config_edit(_class_name="UNet2DConditionModel"), "holds a UNet2DConditionModel, not a diffusers UNet2DModel"),
        "weights misfit": (lambda: config_edit(block_out_channels=[16, 32], norm_num_groups=8), "do not fit its config.json"),
        "not json": (lambda: (folder.mkdir(parents=True), (folder / "config.json").write_text("{oops")), "cannot read .*config.json"),
    }  # fmt: skip


@pytest.mark.parametrize("case", list(_misfit(None)))
def test_a_misfit_unet_folder_stops_the_run_in_one_line_before_any_training(tmp_path, case):
    folder = tmp_path / "unet"
    make, message = _misfit(folder)[case]
    make()
    storage = f"sqlite:///{tmp_path / 'gafi.db'}"
    overrides = [*TINY, "name=byo", f"run_dir={tmp_path / 'run'}", f"generator.checkpoints={folder}", "checkpoint.values=[1]"]
    result = CliRunner().invoke(main, ["run", str(PRESET), "--quiet", "--storage", storage] + [a for o in overrides for a in ("--set", o)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gafi-opt: error: ") and re.search(message, lines[0]), result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "filter.pt").exists()
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["byo"]


def test_no_model_folder_and_a_missing_checkpoint_are_named(tmp_path, data):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GafiError, match="no generator checkpoints found in"):
        check_checkpoints(_byo_spec(tmp_path, tmp_path / "empty"), data, "cpu")
    tiny_unet().save_pretrained(tmp_path / "models" / "unet-5")
    with pytest.raises(GafiError, match=r"no checkpoint for epoch\(s\) \[1\]"):
        check_checkpoints(_byo_spec(tmp_path, tmp_path / "models"), data, "cpu")


# ---------------------------------------------------------------- spec


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("guidance.values=[-1.0]", "guidance.values must list guidance scales >= 0"),
        ("steps.values=[0]", "steps.values must list whole numbers"),
        ("steps.values=[2.5]", "steps.values must list whole numbers"),
        ("sampler.values=['euler']", "unknown sampler 'euler'"),
        ("sampler.search=tpe", None),
        ("generator.diffusion.sampler=heun", "generator.diffusion.sampler one of"),
        ("generator.diffusion.norm_groups=3", "norm_groups (3) must divide"),
        ("generator.diffusion.attention=[true]", "one entry per level (2)"),
        ("generator.diffusion.label_dropout=1.0", "label_dropout must be in [0, 1)"),
        ("generator.diffusion.beta_schedule=cosine", "beta_schedule must be one of"),
        ("compile=true", "compile = true does not apply"),
        ("guidance.pruner=magic", "guidance.pruner must be one of"),
    ],
)
def test_bad_diffusion_values_name_the_problem(override, message):
    if message is None:  # a sampler stage is searched only with samplers listed
        load_spec(PRESET, [override])
        override, message = "sampler.values=['ddim', 'ddpm']", "sampler.search must be 'grid'"
        with pytest.raises(GafiError, match=message):
            load_spec(PRESET, [override, "sampler.search=tpe"])
        return
    with pytest.raises(GafiError) as info:
        load_spec(PRESET, [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_diffusion_stages_need_a_diffusion_generator():
    with pytest.raises(GafiError, match="need generator.arch = 'diffusion'"):
        load_spec(ROOT / "studies" / "digits.toml", ["guidance.values=[1.0]"])


def test_presets_and_stage_lists():
    spec = load_spec(PRESET)
    assert pipeline_stages(spec) == ("baseline", "checkpoint", "guidance", "steps", "stddev", "threshold", "final")
    assert pipeline_stages(tiny("x")) == ("baseline", "checkpoint", "sampler", "guidance", "steps", "stddev", "threshold", "final")
    assert pipeline_stages(load_spec(ROOT / "studies" / "digits.toml")) == ("baseline", "checkpoint", "stddev", "threshold", "final")
    cifar = load_spec(ROOT / "studies" / "cifar10-diffusion.toml")
    assert cifar.is_diffusion and cifar.data.source == "cifar10" and cifar.synth.samples_per_class == 4000
    unet = build_generator(cifar.generator, (3, 32, 32), 10).unet  # DDPM's CIFAR-10 layout: 35.8M parameters
    assert unet.config.block_out_channels == (128, 256, 256, 256) and unet.config.num_class_embeds == 11
    assert 35_000_000 < sum(p.numel() for p in unet.parameters()) < 36_500_000


# ---------------------------------------------------------------- the whole pipeline


def run_tiny(tmp_path_factory, name: str, *extra: str):
    run_dir = tmp_path_factory.mktemp(name) / "run"
    overrides = [*TINY, f"name={name}", f"run_dir={run_dir}", *extra]
    result = CliRunner().invoke(main, ["run", str(PRESET), "--quiet"] + [a for o in overrides for a in ("--set", o)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    spec = load_spec(PRESET, overrides)
    return spec, spec.storage_url, result.stdout


@pytest.fixture(scope="module")
def tiny_diffusion_pipeline(tmp_path_factory):
    """The default rule (late): each search stage trains its points with a seed of its own."""
    return run_tiny(tmp_path_factory, "tiny-diffusion")


@pytest.fixture(scope="module")
def argmax_diffusion_pipeline(tmp_path_factory):
    """The paper's rule on val: one seed everywhere, so a stage's default point repeats the stage before's best."""
    stages = ("checkpoint", "sampler", "guidance", "steps", "stddev", "threshold")
    return run_tiny(tmp_path_factory, "argmax-diffusion", *(f"{stage}.rule=argmax" for stage in stages))


def test_every_diffusion_stage_ran_its_grid_from_the_best_of_the_one_before(tiny_diffusion_pipeline):
    spec, url, _ = tiny_diffusion_pipeline
    pipeline = Pipeline.load(url, spec.name)
    assert pipeline.current_stage() is None
    expected = {"checkpoint": [2, 3], "sampler": ["ddim", "dpm-solver"], "guidance": [0.0, 1.0], "steps": [1, 2],
                "stddev": [1.0, 1.2], "threshold": [0.0, 0.5], "baseline": [0, 1], "final": [0, 1]}  # fmt: skip
    for stage in pipeline.stages:
        param = {"baseline": "seed", "final": "seed"}.get(stage, stage)
        assert sorted(t.params[param] for t in pipeline.finished_trials(stage)) == expected[stage], stage
    chosen = {stage: pipeline.best_value(stage) for stage in ("checkpoint", "sampler", "guidance", "steps", "stddev", "threshold")}
    assert pipeline.stage_study("guidance").user_attrs["fixed"] == {"checkpoint": chosen["checkpoint"], "sampler": chosen["sampler"]}
    assert pipeline.stage_study("final").user_attrs["fixed"] == chosen
    baseline = pipeline.finished_trials("baseline")[0].user_attrs["config"]
    assert "sampler dpm-solver, guidance 0, steps 2" in baseline  # the spec's defaults until the knobs' stages
    final = pipeline.finished_trials("final")[0].user_attrs["config"]
    assert f"sampler {chosen['sampler']}, guidance {chosen['guidance']:g}, steps {chosen['steps']}" in final
    for stage in pipeline.stages:
        study = pipeline.stage_study(stage)
        assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_each_knob_stage_reuses_the_point_that_repeats_the_stage_before(argmax_diffusion_pipeline):
    spec, url, _ = argmax_diffusion_pipeline
    pipeline = Pipeline.load(url, spec.name)
    default = spec.generator.diffusion
    points = {"sampler": default.sampler, "guidance": default.guidance, "steps": default.steps, "stddev": 1.0, "threshold": 0.0}
    stages = pipeline.search_stages
    for index, stage in enumerate(stages[1:], start=1):
        (repeat,) = [t for t in pipeline.finished_trials(stage) if t.params[stage] == points[stage]]
        # The stage before's best, or the first trial with its recipe (a reused best names its source).
        best = pipeline.best_trial(stages[index - 1])
        source = best.user_attrs.get("reused", f"{stages[index - 1]} stage, trial {best.number}")
        assert repeat.user_attrs["reused"] == source and source.split(" stage")[0] in stages[:index], stage
        assert repeat.user_attrs["classifier_epochs"] == 0 and repeat.value == best.value


def test_under_the_default_rule_each_knob_stage_trains_its_repeat_point_afresh(tiny_diffusion_pipeline):
    spec, url, _ = tiny_diffusion_pipeline
    pipeline = Pipeline.load(url, spec.name)
    default = spec.generator.diffusion
    points = {"sampler": default.sampler, "guidance": default.guidance, "steps": default.steps, "stddev": 1.0, "threshold": 0.0}
    seeds = set()
    for stage in pipeline.search_stages[1:]:
        (repeat,) = [t for t in pipeline.finished_trials(stage) if t.params[stage] == points[stage]]
        # Trained, or (a filtered set that a threshold of its own stage drew already) reused from its own stage.
        assert repeat.user_attrs.get("reused", f"{stage} stage").startswith(f"{stage} stage"), stage
        assert f"seed {search_seed(spec, stage)}" in repeat.user_attrs["config"], stage
        seeds.add(search_seed(spec, stage))
    assert len(seeds) == len(pipeline.search_stages) - 1  # a seed of its own per stage


def test_the_export_row_carries_the_knobs_and_the_figures_plot_them(tiny_diffusion_pipeline, tmp_path):
    spec, url, printed = tiny_diffusion_pipeline
    pipeline = Pipeline.load(url, spec.name)
    assert "| sampler | guidance | steps |" in printed.splitlines()[0]
    result = CliRunner().invoke(main, ["export", "--storage", url, "--format", "json"])
    (row,) = json.loads(result.stdout)
    for knob in ("sampler", "guidance", "steps", "checkpoint", "stddev", "threshold"):
        assert row[knob] == pipeline.best_value(knob), knob
    finals = pipeline.finished_trials("final")
    assert row["cas_test"] == pytest.approx(sum(t.user_attrs["test_acc"] for t in finals) / len(finals))
    assert row["synthetic_baseline_test"] is not None and row["real_test"] == pipeline.attrs()["real_test"]
    latex = CliRunner().invoke(main, ["export", "--storage", url, "--format", "latex"]).stdout
    assert "Sampler & Guidance & Steps" in latex
    figures = pipeline_figures(pipeline)
    for stage in ("sampler", "guidance", "steps"):
        figure = figures[f"{stage}-cas"]
        (scores,) = [trace for trace in figure.data if trace.name.startswith("val CAS")]  # one point per trained trial
        assert sorted(scores.x) == sorted(t.params[stage] for t in pipeline.finished_trials(stage) if t.state == TrialState.COMPLETE)
        assert f"chosen ({spec.stage(stage).rule}): {stage} " in " ".join(trace.name for trace in figure.data)
    status = CliRunner().invoke(main, ["status", "--storage", url]).output
    assert all(f"  {stage} " in status for stage in ("sampler", "guidance", "steps"))


def test_gan_rows_keep_their_columns_with_empty_knobs(tiny_pipeline):
    _, url = tiny_pipeline
    (row,) = json.loads(CliRunner().invoke(main, ["export", "--storage", url, "--format", "json"]).stdout)
    assert row["guidance"] is None and row["steps"] is None and row["sampler"] is None
    header = CliRunner().invoke(main, ["export", "--storage", url, "--format", "markdown"]).stdout.splitlines()[0]
    assert "sampler" not in header and "| checkpoint | stddev | threshold |" in header
    csv_header = CliRunner().invoke(main, ["export", "--storage", url, "--format", "csv"]).stdout.splitlines()[0].split(",")
    assert csv_header[-3:] == ["guidance", "steps", "sampler"]
