"""`gafi-opt ablate`: the final choice with each technique left out and alone, over the final seeds, resumable;
`gafi-opt export --ablation` in every format."""

from __future__ import annotations

import csv
import json
import sqlite3
import statistics

import optuna
import pytest
from click.testing import CliRunner
from conftest import DIGITS, tiny_overrides
from optuna.trial import TrialState

from gafi_opt.cli import main
from gafi_opt.experiments.ablation import run_ablation
from gafi_opt.pipeline import Pipeline, TrialHooks
from gafi_opt.pipeline.ablation import FULL, VARIANTS, AblationPlan
from gafi_opt.report.ablation import ablation_rows
from gafi_opt.spec import load_spec


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def storage(tiny_pipeline, tmp_path_factory):
    """A copy of the tiny pipeline's storage (its models stay where they are): the shared one stays as it is."""
    spec, _ = tiny_pipeline
    copy = tmp_path_factory.mktemp("ablation") / "gafi.db"
    with sqlite3.connect(spec.run_path / "gafi.db") as source, sqlite3.connect(copy) as target:
        source.backup(target)
    return spec, f"sqlite:///{copy}"


class StopAfter(TrialHooks):
    """Stops the loop (as Ctrl-C between trials would) once `count` trials have finished."""

    def __init__(self, count: int):
        self.count = count

    def trial_finished(self, plan, stage):
        self.count -= 1
        if self.count == 0:
            raise KeyboardInterrupt


def trials(url, name):
    return optuna.load_study(study_name=f"{name}/ablation", storage=url).get_trials()


def trained(trial) -> bool:
    return trial.state == TrialState.COMPLETE and "reused" not in trial.user_attrs


def test_ablate_trains_exactly_the_missing_slots_and_a_second_run_trains_nothing(storage):
    spec, url = storage
    slots = len(VARIANTS) * spec.final.seeds
    with pytest.raises(KeyboardInterrupt):
        run_ablation(url, spec.name, hooks=StopAfter(3))
    first = trials(url, spec.name)
    assert len([t for t in first if t.state == TrialState.COMPLETE]) == 3

    result = invoke("ablate", "--storage", url, "--pipeline", spec.name, "--quiet")
    assert result.exit_code == 0, result.output
    after = trials(url, spec.name)
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(complete) == slots and not [t for t in after if t.state != TrialState.COMPLETE]  # nothing ran twice
    assert {t._trial_id for t in first} <= {t._trial_id for t in complete}
    assert sorted((t.params["variant"], t.params["seed"]) for t in complete) == sorted((v.name, s) for v in VARIANTS for s in range(spec.final.seeds))
    cas_epochs = spec.cas.epochs
    for trial in complete:  # trained, or (a recipe repeating a finished trial) reused at no cost
        assert trial.user_attrs["classifier_epochs"] == (0 if "reused" in trial.user_attrs else cas_epochs)
    assert "| GaFi (all techniques) |" in result.output and "| without filtering |" in result.output

    again = invoke("ablate", "--storage", url, "--pipeline", spec.name, "--quiet")
    assert again.exit_code == 0 and len(trials(url, spec.name)) == slots  # no new trial at all


def test_each_variant_trains_the_final_choice_with_its_techniques_switched_off(storage):
    spec, url = storage
    pipeline = Pipeline.load(url, spec.name)
    best = {stage: pipeline.best_value(stage) for stage in ("checkpoint", "stddev", "threshold")}
    for trial in trials(url, spec.name):
        variant = next(v for v in VARIANTS if v.name == trial.params["variant"])
        config = trial.user_attrs["config"]
        assert f"checkpoint {best['checkpoint']}," in config
        assert f"stddev {best['stddev'] if variant.expansion else 1.0:g}," in config
        assert f"filter threshold {best['threshold']:g}," in config if variant.filter else "filter threshold off," in config
        assert ("set renewed every 1 epoch(s)" if variant.recycling else "set renewed never") in config
        assert f"seed {trial.params['seed']}" in config


def test_a_variant_that_repeats_the_final_choice_reuses_its_trials(storage):
    spec, url = storage
    plan = AblationPlan(Pipeline.load(url, spec.name))
    for trial in Pipeline.load(url, spec.name).finished_trials("final"):
        found, name = plan.trial_to_reuse("ablation", FULL.config(plan.choice, trial.params["seed"]), {})
        assert found.number == trial.number and name == f"final stage, trial {trial.number}"
    assert plan.trial_to_reuse("ablation", FULL.config(plan.choice, 99), {}) is None


def test_export_ablation_in_every_format_matches_the_storage(storage, tmp_path):
    spec, url = storage

    def export(fmt):
        result = invoke("export", "--storage", url, "--ablation", "--format", fmt)
        assert result.exit_code == 0, result.output
        return result.stdout

    truth = {"gafi": [t.user_attrs["test_acc"] for t in Pipeline.load(url, spec.name).finished_trials("final")]}
    for trial in trials(url, spec.name):
        truth.setdefault(trial.params["variant"], []).append(trial.user_attrs["test_acc"])
    full = statistics.fmean(truth["gafi"])

    rows = json.loads(export("json"))
    assert [r["variant"] for r in rows] == ["gafi"] + [v.name for v in VARIANTS]
    for row in rows:
        assert row["cas_test"] == pytest.approx(statistics.fmean(truth[row["variant"]]), abs=1e-12)
        assert row["cas_test_std"] == pytest.approx(statistics.stdev(truth[row["variant"]]), abs=1e-12)
        assert row["delta_test"] == pytest.approx(row["cas_test"] - full, abs=1e-12) and row["seeds"] == spec.final.seeds
    no_filter = rows[1]
    assert (no_filter["filter"], no_filter["threshold"], no_filter["expansion"], no_filter["recycle_every"]) == (False, None, True, 1)

    table = list(csv.DictReader(export("csv").splitlines()))
    assert [r["variant"] for r in table] == [r["variant"] for r in rows]
    assert [float(r["cas_test"]) for r in table] == pytest.approx([r["cas_test"] for r in rows], abs=1e-12)
    assert table[1]["filter"] == "false" and table[1]["threshold"] == ""

    markdown = export("markdown").strip().splitlines()
    assert len(markdown) == 2 + len(rows) and markdown[0].startswith("| pipeline | variant |")
    assert f"| {100 * rows[1]['delta_test']:+.2f} pp |" in markdown[3] and "| off |" in markdown[3]

    latex = export("latex").strip().splitlines()
    assert latex[0] == r"\begin{tabular}{lllllrr}" and latex[-1] == r"\end{tabular}" and len(latex) == 6 + len(rows)
    assert all(line.count(" & ") == 6 for line in latex[2:3] + latex[4:-2])


def test_bad_input_is_one_line(tiny_pipeline, storage):
    spec, url = storage
    unfinished = Pipeline.create_or_load(load_spec(DIGITS, [*tiny_overrides(spec.run_path), "name=unfinished"]), url)
    cases = [
        (("ablate", "--storage", url, "--pipeline", "absent"), "no pipeline 'absent'"),
        (("ablate", "--storage", url, "--pipeline", unfinished.name), "pipeline 'unfinished' is not finished"),
        (("export", "--storage", url, "--pipeline", unfinished.name, "--ablation"), "no ablation of unfinished"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert ablation_rows(Pipeline.load(tiny_pipeline[1], spec.name)) == []  # the shared storage has no ablation
