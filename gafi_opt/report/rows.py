"""The rows of a storage's results: per pipeline, the best hyperparameters and CAS beside both baselines
(and the distribution metrics of the synthetic sets);
per multigen study, CAS over its seeds; per stage, the trials by state and what they cost."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from gafi_opt.pipeline import Pipeline
from gafi_opt.pipeline.multigen import ATTR, check_study, finished_trials, multigen_studies
from gafi_opt.pipeline.store import QUALITY_ATTR
from gafi_opt.search.stages import SEARCHED
from gafi_opt.stats import mean_sd
from gafi_opt.storages import open_storage

EXPORT_KEYS = (
    "pipeline",
    "dataset",
    "mode",
    "real_fraction",
    "augment_ratio",
    "checkpoint",
    "stddev",
    "threshold",
    "cas_val",
    "search_val",
    "cas_test",
    "cas_test_std",
    "seeds",
    "synthetic_baseline_test",
    "real_test",
    "real_only_test",
    "real_only_test_std",
    "gap_closed",
    "remaining_gap",
    "selection",
    "rule",
    # Distribution metrics against real val in the filter classifier's feature space (gafi_opt.result.quality):
    # GaFi's choice, the synthetic baseline, and a real train subset of the same shape as a yardstick.
    "fd",
    "precision",
    "recall",
    "synthetic_baseline_fd",
    "synthetic_baseline_precision",
    "synthetic_baseline_recall",
    "real_fd",
    "real_precision",
    "real_recall",
    "guidance",  # a diffusion generator's sampling knobs: None (empty cells) for a GAN
    "steps",
    "sampler",
)
QUALITY_PARTS = {"": "final", "synthetic_baseline_": "baseline", "real_": "real"}  # key prefix -> part of the quality attr
QUALITY_METRICS = ("fd", "precision", "recall")


def summary_row(pipeline: Pipeline) -> dict:
    """One row per pipeline; accuracies are fractions, None where a stage has not finished."""
    attrs = pipeline.attrs()
    row = {key: None for key in EXPORT_KEYS}
    row.update(pipeline=pipeline.name, dataset=attrs.get("dataset", pipeline.spec.data.source), selection=pipeline.spec.selection)
    searched = []
    for stage in pipeline.search_stages:
        if pipeline.stage_complete(stage):
            row[SEARCHED[stage]] = pipeline.best_value(stage)
        searched += [t.user_attrs["val_acc"] for t in pipeline.finished_trials(stage) if t.state == TrialState.COMPLETE]
    # The search's best val beside the final stage's fresh one (cas_val): their difference is selection inflation.
    row["search_val"] = max(searched, default=None)
    rules = sorted({pipeline.spec.stage(stage).rule for stage in pipeline.search_stages})
    row["rule"] = rules[0] if len(rules) == 1 else "+".join(rules)
    if pipeline.spec.is_diffusion and "sampler" not in pipeline.search_stages:
        row["sampler"] = pipeline.spec.generator.diffusion.sampler  # not searched: the spec's, which every stage used
    final = pipeline.seed_summary("final")
    if final:
        row.update(cas_val=final["val"], cas_test=final["test"], cas_test_std=final["test_std"], seeds=final["seeds"])
    baseline = pipeline.seed_summary("baseline")
    if baseline:
        row["synthetic_baseline_test"] = baseline["test"]
    row["real_test"] = attrs.get("real_test")
    spec = pipeline.spec
    row.update(mode=spec.objective, real_fraction=spec.data.real_fraction, augment_ratio=spec.augment_ratio if spec.objective == "augment" else None)
    real_only = pipeline.real_only_summary(attrs)
    if real_only:
        row.update(real_only_test=real_only["test"], real_only_test_std=real_only["test_std"])
    if None not in (row["cas_test"], row["synthetic_baseline_test"], row["real_test"]):
        gap = row["real_test"] - row["synthetic_baseline_test"]
        row["gap_closed"] = (row["cas_test"] - row["synthetic_baseline_test"]) / gap if gap > 0 else None
    if None not in (row["cas_test"], row["real_test"]):
        row["remaining_gap"] = row["real_test"] - row["cas_test"]  # what synthetic data still lacks
    if spec.objective == "augment":
        row["gap_closed"] = row["remaining_gap"] = None  # both gaps measure synthetic-only data against real
    quality = attrs.get(QUALITY_ATTR) or {}
    for prefix, part in QUALITY_PARTS.items():
        for metric in QUALITY_METRICS:
            row[prefix + metric] = quality.get(part, {}).get(metric)
    return row


def multigen_rows(storage, names: list[str] | None = None) -> list[dict]:
    """One row per multigen study whose members are all in `names` (all when None), by generator count K
    then name (the paper's table has K = 1, 2, 4, 6); keys as summary_row plus `generators` and `members`
    (each member's pipeline, checkpoint, stddev and threshold). CAS is the mean over the seeds, one
    finished trial per seed; real_test is the mean of the members' real baselines."""
    storage = open_storage(storage, must_exist=True)
    rows = []
    for summary in multigen_studies(storage):
        members = summary.user_attrs[ATTR]
        member_names = [m["pipeline"] for m in members]
        if names and not set(member_names) <= set(names):
            continue
        pipelines = [Pipeline.load(storage, name) for name in member_names]
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        check_study(study, storage)
        done = [t for t in finished_trials(storage, study) if t.state == TrialState.COMPLETE]
        row = {key: None for key in EXPORT_KEYS}
        attrs = [p.attrs() for p in pipelines]
        spec = pipelines[0].spec  # members share data and objective
        row.update(
            pipeline=summary.study_name,
            dataset=attrs[0].get("dataset", spec.data.source),
            selection="test" if any(p.spec.selection == "test" for p in pipelines) else "val",
            generators=len(members),
            members=members,
            mode=spec.objective,
            real_fraction=spec.data.real_fraction,
            augment_ratio=spec.augment_ratio if spec.objective == "augment" else None,
        )
        if done:
            cas_test, cas_test_std = mean_sd(t.user_attrs["test_acc"] for t in done)
            row.update(cas_val=mean_sd(t.user_attrs["val_acc"] for t in done)[0], cas_test=cas_test, cas_test_std=cas_test_std, seeds=len(done))
        reals = [a.get("real_test") for a in attrs]
        if None not in reals:
            row["real_test"] = mean_sd(reals)[0]
            if row["cas_test"] is not None and spec.objective != "augment":
                row["remaining_gap"] = row["real_test"] - row["cas_test"]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["generators"], r["pipeline"]))


def stage_status(pipeline: Pipeline) -> list[dict]:
    """Trial counts per stage, for `gafi-opt status`, with the trials that reused an earlier result
    and the classifier-epochs the finished trials spent (the search's cost)."""
    current = pipeline.current_stage()
    rows = []
    for stage in pipeline.stages:
        study = pipeline.stage_study(stage)
        counts = {state.name.lower(): 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)}
        reused = epochs = 0
        if study is not None:
            for trial in study.get_trials(deepcopy=False):
                counts[trial.state.name.lower()] += 1
                if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                    reused += "reused" in trial.user_attrs
                    epochs += int(trial.user_attrs.get("classifier_epochs", 0))
        state = "done" if pipeline.stage_complete(stage) else ("current" if stage == current else "pending")
        rows.append({"stage": stage, "state": state, **counts, "reused": reused, "epochs": epochs})
    return rows
