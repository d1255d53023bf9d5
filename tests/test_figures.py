"""`gafi-opt plot`, the figures behind it, and the live progress lines."""

from __future__ import annotations

import dataclasses
import statistics

import pytest
import torch
from click.testing import CliRunner
from conftest import DIGITS, tiny_overrides
from torch import nn

from gafi_opt.cli import main
from gafi_opt.pipeline import Pipeline, StageLoop, WorkerOptions
from gafi_opt.report.figures import history_figure, stage_figure, val_curves_figure
from gafi_opt.report.progress import StageProgress
from gafi_opt.search.selection import late_epochs
from gafi_opt.synth import SyntheticSource
from gafi_opt.testing.fixed_work import FixedWork, fixed_work_spec


def test_plot_writes_every_figure(tiny_pipeline, tmp_path):
    spec, url = tiny_pipeline
    out = tmp_path / "figures"
    result = CliRunner().invoke(main, ["plot", "--storage", url, "--pipeline", spec.name, "-o", str(out), "--plotlyjs", "directory"])
    assert result.exit_code == 0, result.output
    expected = {f"{stage}-{kind}.html" for stage in ("checkpoint", "stddev", "threshold") for kind in ("cas", "curves", "history")}
    expected |= {"baseline-curves.html", "final-curves.html", "plotly.min.js"}
    assert {p.name for p in out.iterdir()} == expected
    html = (out / "threshold-cas.html").read_text()
    assert "CAS against threshold" in html and 'src="plotly.min.js"' in html


def test_plot_errors(tiny_pipeline, tmp_path):
    _, url = tiny_pipeline
    result = CliRunner().invoke(main, ["plot", "--storage", url, "--pipeline", "nope", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "no pipeline 'nope'" in result.output


def test_figures_show_the_trials(tiny_pipeline):
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    for stage in ("checkpoint", "stddev", "threshold"):
        trials = pipeline.finished_trials(stage)
        figure = stage_figure(pipeline, stage)
        # What the default rule saw: each trial's val averaged over the epochs after the last lr drop.
        val = next(t for t in figure.data if t.name.startswith("val CAS, mean ± sd of the last epochs"))
        complete = sorted((t for t in trials if t.value is not None), key=lambda t: (t.params[stage], t.number))
        late = late_epochs(spec.cas.epochs, spec.cas.lr_milestones)
        assert list(val.x) == [t.params[stage] for t in complete]
        assert list(val.y) == pytest.approx([100 * statistics.fmean(t.user_attrs["val_history"][-late:]) for t in complete])
        assert list(val.error_y.array) == pytest.approx([100 * statistics.pstdev(t.user_attrs["val_history"][-late:]) for t in complete])
        best = pipeline.best_trial(stage)
        rule = spec.stage(stage).rule
        star = next(t for t in figure.data if t.name.startswith(f"chosen ({rule})"))
        assert list(star.x) == [best.params[stage]] and f"(rule: {rule})" in figure.layout.title.text
        curves = val_curves_figure(pipeline, stage)
        assert list(curves.data[0].y) == pytest.approx([100 * v for v in best.user_attrs["val_history"]])
        history = history_figure(pipeline, stage)
        assert history.layout.yaxis.title.text == "val CAS"
    final = stage_figure(pipeline, "final")
    assert len(final.data) == spec.final.seeds


def test_stage_line_is_live_or_silent(tiny_pipeline, capsys):
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    silent = StageProgress(enabled=False)
    silent(pipeline, "checkpoint")
    assert capsys.readouterr().err == ""
    line = StageProgress(enabled=True)
    line(pipeline, "checkpoint")
    line.close()
    err = capsys.readouterr().err
    best = pipeline.best_trial("checkpoint").value
    assert f"{spec.name}/checkpoint" in err and "2/2" in err and f"best val {best:.4f}" in err and "pruned" in err


class Noise(nn.Module):
    latent_dim = 4
    num_classes = 2

    def forward(self, z, y):
        return torch.tanh(z).view(-1, 1, 2, 2)


class CoinFilter(nn.Module):
    """Class decided by the sign of the first pixel: about half of the samples are accepted."""

    def forward(self, x):
        s = 8 * x[:, 0, 0, 0]
        return torch.stack([-s, s], dim=1)


def test_generation_bar_shows_acceptance(capsys):
    source = SyntheticSource(Noise(), 2, 200, threshold=0.0, filter_model=CoinFilter(), seed=0)
    source.fill(progress=True)
    err = capsys.readouterr().err
    assert "synthetic set" in err and f"accept={source.stats.acceptance_rate:.2f}" in err
    source.fill(progress=False)
    assert capsys.readouterr().err == ""


def test_the_key_figure_shows_the_smoothed_estimate_the_rule_chose_by(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    spec = fixed_work_spec("smooth", 6)
    spec = dataclasses.replace(spec, checkpoint=dataclasses.replace(spec.checkpoint, rule="robust"))
    pipeline = Pipeline.create_or_load(spec, url)
    StageLoop(pipeline, FixedWork(0.0), WorkerOptions(stages=("checkpoint",), poll=0.05)).run()
    figure = stage_figure(pipeline, "checkpoint")
    names = [t.name for t in figure.data]
    assert "smoothed ± 1 sd" in names and "smoothed estimate (chooses)" in names
    estimate = next(t for t in figure.data if t.name == "smoothed estimate (chooses)")
    choice = pipeline.choice("checkpoint")
    assert list(estimate.x) == [1, 2, 3, 4, 5, 6] and len(choice.observations) == 6
    chosen = next(t for t in figure.data if t.name.startswith("chosen (robust)"))
    assert list(chosen.x) == [choice.value] and list(chosen.y) == pytest.approx([max(estimate.y)])  # the estimate's top


def test_the_soft_rule_runs_end_to_end_and_its_figure_shows_the_soft_scores(tiny_pipeline):
    # The tiny pipeline again under the soft rule, in its own storage beside the tiny run (its models are reused).
    spec, _ = tiny_pipeline
    url = f"sqlite:///{spec.run_path.parent / 'soft.db'}"
    overrides = [*tiny_overrides(spec.run_path, name="tiny-soft"), *(f"{s}.rule=soft" for s in ("checkpoint", "stddev", "threshold"))]
    result = CliRunner().invoke(main, ["run", str(DIGITS), "--quiet", "--storage", url] + [a for o in overrides for a in ("--set", o)])
    assert result.exit_code == 0, result.output
    pipeline = Pipeline.load(url, "tiny-soft")
    late = late_epochs(spec.cas.epochs, spec.cas.lr_milestones)
    for stage in ("checkpoint", "stddev", "threshold"):
        choice = pipeline.choice(stage)
        complete = sorted((t for t in pipeline.finished_trials(stage) if t.value is not None), key=lambda t: (t.params[stage], t.number))
        soft = [statistics.fmean(t.user_attrs["val_soft_history"][-late:]) for t in complete]
        assert choice.rule == "soft" and choice.score == pytest.approx(max(soft))  # two points: nothing to smooth
        figure = stage_figure(pipeline, stage)
        shown = next(t for t in figure.data if t.name.startswith("soft val CAS (mean probability of the true class)"))
        assert list(shown.y) == pytest.approx([100 * s for s in soft])
