"""End to end: the whole pipeline on the digits default at a tiny budget, through the CLI."""

import json

import optuna
import pytest
from click.testing import CliRunner
from conftest import DIGITS, tiny_overrides
from optuna.trial import TrialState

from gafi_opt.cli import main
from gafi_opt.pipeline import Pipeline
from gafi_opt.search.selection import late_epochs
from gafi_opt.search.stages import STAGES


def test_every_stage_finished_with_each_grid_point_once(tiny_pipeline):
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    assert pipeline.current_stage() is None
    expected = {
        "baseline": [0, 1],
        "checkpoint": [2, 3],
        "stddev": [1.0, 1.5],
        "threshold": [0.0, 0.5],
        "final": [0, 1],
    }
    for stage in STAGES:
        trials = pipeline.finished_trials(stage)
        param = {"baseline": "seed", "final": "seed"}.get(stage, stage)
        assert sorted(t.params[param] for t in trials) == expected[stage], stage
        study = pipeline.stage_study(stage)
        assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_each_stage_starts_from_the_best_of_the_one_before(tiny_pipeline):
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    best_checkpoint = pipeline.best_value("checkpoint")
    best_stddev = pipeline.best_value("stddev")
    best_threshold = pipeline.best_value("threshold")
    assert pipeline.stage_study("stddev").user_attrs["fixed"] == {"checkpoint": best_checkpoint}
    assert pipeline.stage_study("threshold").user_attrs["fixed"] == {"checkpoint": best_checkpoint, "stddev": best_stddev}
    assert pipeline.stage_study("final").user_attrs["fixed"] == {
        "checkpoint": best_checkpoint,
        "stddev": best_stddev,
        "threshold": best_threshold,
    }
    assert pipeline.stage_study("baseline").user_attrs["fixed"] == {"last_checkpoint": 3}
    # The default rule (trend) scores a trial on val by the mean of the epochs after the last learning-rate
    # drop and smooths over the grid; two checkpoints leave nothing to smooth, so no complete trial scores higher.
    late = late_epochs(spec.cas.epochs, spec.cas.lr_milestones)
    complete = [t for t in pipeline.finished_trials("checkpoint") if t.state == TrialState.COMPLETE]
    scores = {t.params["checkpoint"]: sum(t.user_attrs["val_history"][-late:]) / late for t in complete}
    assert scores[best_checkpoint] == max(scores.values())
    choice = pipeline.choice("checkpoint")
    assert len(scores) == 2 and choice.rule == "trend" and choice.score == pytest.approx(scores[best_checkpoint])


def test_the_paper_rule_takes_the_best_val_of_the_last_epoch(tiny_paper_pipeline):
    spec, url = tiny_paper_pipeline
    pipeline = Pipeline.load(url, spec.name)
    for stage in ("checkpoint", "stddev", "threshold"):
        complete = [t for t in pipeline.finished_trials(stage) if t.state == TrialState.COMPLETE]
        assert pipeline.choice(stage).rule == "argmax"
        assert pipeline.best_trial(stage).user_attrs["val_acc"] == max(t.user_attrs["val_acc"] for t in complete)


def test_the_default_rule_evaluates_the_previous_winner_afresh(tiny_pipeline):
    # Each search stage trains with a seed of its own: stddev 1.0 and threshold 0.0 are trained again,
    # not handed the previous stage's (lucky) best score.
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    for index, (stage, point) in enumerate((("checkpoint", None), ("stddev", 1.0), ("threshold", 0.0))):
        trials = pipeline.finished_trials(stage)
        # Nothing is handed an earlier stage's result; a threshold may repeat a set its own stage drew.
        assert all(t.user_attrs.get("reused", f"{stage} stage").startswith(f"{stage} stage") for t in trials)
        assert all(f"seed {spec.seed + 1000 * (index + 1)}" in t.user_attrs["config"] for t in trials)
        if point is not None:
            assert [t for t in trials if t.params[stage] == point]
    # The choice is frozen in the storage once the stage is complete.
    frozen = pipeline.storage.get_study_system_attrs(pipeline.stage_study("stddev")._study_id)
    assert json.loads(frozen["gafi:tas:choice"])["value"] == pipeline.best_value("stddev")


def test_trials_record_what_they_trained_on(tiny_pipeline):
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    for stage in STAGES:
        for trial in pipeline.finished_trials(stage):
            attrs = trial.user_attrs
            assert f"stage {stage}" in attrs["config"]
            assert 0.0 <= attrs["acceptance_rate"] <= 1.0
            trained = len(attrs["val_history"])
            assert attrs["classifier_epochs"] == (0 if "reused" in attrs else trained)
            # The soft val accuracy of every epoch beside the accuracy (the `soft` rule's score).
            assert len(attrs["val_soft_history"]) == trained and all(0.0 < v <= 1.0 for v in attrs["val_soft_history"])
            assert sorted(trial.intermediate_values) == list(range(1, trained + 1))
            if trial.state == TrialState.COMPLETE:
                assert 0.0 <= attrs["test_acc"] <= 1.0
                assert trial.value == attrs["val_acc"]
    # The baseline never filters: every generated sample was accepted.
    assert all(t.user_attrs["acceptance_rate"] == 1.0 for t in pipeline.finished_trials("baseline"))
    assert "filter threshold off" in pipeline.finished_trials("baseline")[0].user_attrs["config"]


def test_under_the_paper_rule_points_that_repeat_the_previous_best_reuse_it(tiny_paper_pipeline):
    # The checkpoint stage trains with stddev 1 and threshold 0: stddev 1.0 repeats its best
    # trial, and threshold 0.0 repeats the stddev stage's best (same data, same seed).
    spec, url = tiny_paper_pipeline
    pipeline = Pipeline.load(url, spec.name)
    for stage, point, earlier in (("stddev", 1.0, "checkpoint"), ("threshold", 0.0, "stddev")):
        source = pipeline.best_trial(earlier)
        (repeat,) = [t for t in pipeline.finished_trials(stage) if t.params[stage] == point]
        assert repeat.user_attrs["reused"] == f"{earlier} stage, trial {source.number}"
        assert repeat.user_attrs["classifier_epochs"] == 0
        assert repeat.value == source.value and repeat.intermediate_values == source.intermediate_values
        for key in ("val_acc", "test_acc", "val_history", "acceptance_rate"):
            assert repeat.user_attrs[key] == source.user_attrs[key]
        others = [t for t in pipeline.finished_trials(stage) if t.params[stage] != point]
        trained = [t for t in others if "reused" not in t.user_attrs]
        assert trained and all(t.user_attrs["classifier_epochs"] > 0 for t in trained)
        for trial in others:  # the rest drew a set a threshold of theirs repeats (same-set reuse)
            assert trial in trained or trial.user_attrs["same_set_thresholds"][0] <= trial.params[stage] < trial.user_attrs["same_set_thresholds"][1]
    # The final and baseline stages always train.
    assert all("reused" not in t.user_attrs for s in ("baseline", "final") for t in pipeline.finished_trials(s))


def test_a_threshold_that_filters_the_same_set_reuses_the_trial_that_drew_it(tiny_pipeline):
    # A sample is kept when the filter's argmax is its class, so p[class] >= 1/10 on digits: thresholds
    # 0 and 0.05 take the same decisions on every candidate, so draw the same set with the same seed.
    import torch

    from gafi_opt.cas import TrialContext, train_cas
    from gafi_opt.data import load_data
    from gafi_opt.search.stages import trial_config
    from gafi_opt.spec import load_spec
    from gafi_opt.storages import open_storage

    tiny_spec, _ = tiny_pipeline  # its filter and generator: only the new trials train
    overrides = [*tiny_overrides(tiny_spec.run_path, name="tiny-same-set"), "threshold.values=[0.0, 0.05, 0.5]"]
    url = f"sqlite:///{tiny_spec.run_path.parent / 'same-set.db'}"
    result = CliRunner().invoke(main, ["run", str(DIGITS), "--quiet", "--storage", url] + [a for o in overrides for a in ("--set", o)])
    assert result.exit_code == 0, result.output
    spec = load_spec(DIGITS, overrides)
    pipeline = Pipeline(open_storage(url), spec)
    trials = {t.params["threshold"]: t for t in pipeline.finished_trials("threshold")}
    low = trials[0.05]  # run after 0.5 and 0.0 (the grid's ends first)
    (source,) = [t for t in trials.values() if low.user_attrs["reused"] == f"threshold stage, trial {t.number}"]
    assert source.user_attrs["same_set_thresholds"][0] <= 0.05 < source.user_attrs["same_set_thresholds"][1]
    assert low.user_attrs["classifier_epochs"] == 0 and low.user_attrs["val_history"] == source.user_attrs["val_history"]
    # Trained afresh, the reused point gives exactly the result it was handed.
    config = trial_config("threshold", 0.05, pipeline.stage_study("threshold").user_attrs["fixed"], spec)
    fresh = train_cas(TrialContext(spec, load_data(spec.data), torch.device("cpu")), config)
    assert fresh.val_history == pytest.approx(low.user_attrs["val_history"], abs=1e-4) and fresh.test_acc == low.user_attrs["test_acc"]


def test_export_json_matches_the_storage(tiny_pipeline):
    spec, url = tiny_pipeline
    result = CliRunner().invoke(main, ["export", "--storage", url, "--format", "json"])
    assert result.exit_code == 0, result.output
    (row,) = [r for r in json.loads(result.stdout) if r["pipeline"] == spec.name]
    for key in ("pipeline", "dataset", "checkpoint", "stddev", "threshold", "cas_val", "cas_test", "cas_test_std", "synthetic_baseline_test", "real_test"):
        assert key in row
    pipeline = Pipeline.load(url, spec.name)
    finals = pipeline.finished_trials("final")
    assert row["cas_test"] == pytest.approx(sum(t.user_attrs["test_acc"] for t in finals) / len(finals))
    baselines = pipeline.finished_trials("baseline")
    assert row["synthetic_baseline_test"] == pytest.approx(sum(t.user_attrs["test_acc"] for t in baselines) / len(baselines))
    assert row["real_test"] == pipeline.attrs()["real_test"]
    assert row["checkpoint"] == pipeline.best_value("checkpoint") and row["dataset"] == "digits"
    assert all(0.0 <= row[k] <= 1.0 for k in ("cas_val", "cas_test", "synthetic_baseline_test", "real_test"))
    # Beside the final stage's fresh val: the search's best val (their difference is selection inflation).
    searched = [t.user_attrs["val_acc"] for s in ("checkpoint", "stddev", "threshold") for t in pipeline.finished_trials(s) if t.state == TrialState.COMPLETE]
    assert row["search_val"] == max(searched) and row["rule"] == "trend"


def test_status_and_markdown_export(tiny_pipeline):
    spec, url = tiny_pipeline
    status = CliRunner().invoke(main, ["status", "--storage", url, "--pipeline", spec.name])
    assert status.exit_code == 0, status.output
    assert f"pipeline {spec.name}: complete" in status.output
    assert "checkpoint " in status.output and "done" in status.output
    # Per stage: reused trials and classifier-epochs spent; the total matches the trials' own counts.
    lines = {line.split()[0]: line.split() for line in status.output.splitlines()[2:] if line.startswith("  ") and line.split()[0] in STAGES}
    pipeline = Pipeline.load(url, spec.name)
    for stage in ("checkpoint", "stddev", "threshold"):  # late: only a threshold repeating its own stage's set is reused
        assert lines[stage][-2] == str(sum("reused" in t.user_attrs for t in pipeline.finished_trials(stage)))
    assert lines["checkpoint"][-2] == lines["stddev"][-2] == "0"
    spent = sum(t.user_attrs["classifier_epochs"] for stage in STAGES for t in pipeline.finished_trials(stage))
    assert f"classifier-epochs spent by finished trials: {spent} " in status.output
    table = CliRunner().invoke(main, ["export", "--storage", url, "--pipeline", spec.name, "--format", "markdown"])
    assert table.exit_code == 0 and table.stdout.startswith("| pipeline | dataset |") and "| checkpoint |" in table.stdout


def test_run_again_skips_what_is_done(tiny_pipeline):
    spec, url = tiny_pipeline
    before = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)}
    args = ["run", str(DIGITS), "--quiet"] + [a for o in _overrides(spec) for a in ("--set", o)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    after = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)}
    assert before == after


def _overrides(spec):
    from conftest import tiny_overrides

    return tiny_overrides(spec.run_path, spec.name)
