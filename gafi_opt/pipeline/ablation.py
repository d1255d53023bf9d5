"""A pipeline's ablation in its storage: what each GaFi technique adds to the final choice, alone and left out.

The final choice uses three techniques on top of its checkpoint: Dynamic Sample Filtering (the
threshold), the Expansion Trick (the stddev) and Dynamic Dataset Recycle (the final stage's recycle
period). Each variant switches some of them off (filter: no filtering at all; expansion: stddev 1;
recycling: one fixed set) and is trained over the final stage's seeds, so every variant is paired
seed by seed with the final stage itself, the full GaFi row.

The study is `<pipeline>/ablation`, one slot per (variant, seed), run by the one worker loop like a
stage: a second run trains only the slots left unfinished, and any number of processes may share it.
A variant whose recipe repeats a finished trial (the final stage's, or another variant's: with a chosen
stddev of 1, "no expansion" is the final choice again) takes that result instead of training.
Nothing here imports torch; what a trial trains lives in gafi_opt.experiments.ablation.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import optuna
import optuna_dashboard
from optuna.trial import FrozenTrial, TrialState

from gafi_opt.errors import GafiError, one_line
from gafi_opt.pipeline.loop import READY_WAIT_S
from gafi_opt.pipeline.store import FORMAT_ATTR, STORAGE_FORMAT, Pipeline
from gafi_opt.search.reuse import same_recipe
from gafi_opt.search.stages import TrialConfig, grid, stage_spec
from gafi_opt.storages import slots, storage_name

log = logging.getLogger(__name__)
STAGE = "ablation"
ATTR = "gafi_ablation"  # the study's user attr: the final choice it ablates
SEED_MAX = 2**31 - 1


@dataclass(frozen=True)
class Variant:
    """The final choice with some techniques switched off."""

    name: str
    label: str
    filter: bool
    expansion: bool
    recycling: bool

    def config(self, choice: dict, seed: int) -> TrialConfig:
        """The variant's data recipe for one seed; `choice` holds checkpoint, stddev, threshold, recycle_every."""
        return TrialConfig(
            f"{STAGE}/{self.name}",
            int(choice["checkpoint"]),
            float(choice["stddev"]) if self.expansion else 1.0,
            float(choice["threshold"]) if self.filter else None,
            int(choice["recycle_every"]) if self.recycling else 0,
            int(seed),
        )


# Left out one at a time, then each alone, then none (the chosen checkpoint on its own).
VARIANTS = (
    Variant("no-filter", "without filtering", filter=False, expansion=True, recycling=True),
    Variant("no-expansion", "without expansion (stddev 1)", filter=True, expansion=False, recycling=True),
    Variant("no-recycling", "without recycling (one fixed set)", filter=True, expansion=True, recycling=False),
    Variant("filter-only", "filtering alone", filter=True, expansion=False, recycling=False),
    Variant("expansion-only", "expansion alone", filter=False, expansion=True, recycling=False),
    Variant("recycling-only", "recycling alone", filter=False, expansion=False, recycling=True),
    Variant("checkpoint-only", "none (chosen checkpoint only)", filter=False, expansion=False, recycling=False),
)
BY_NAME = {variant.name: variant for variant in VARIANTS}
FULL = Variant("gafi", "GaFi (all techniques)", filter=True, expansion=True, recycling=True)  # the final stage itself


def study_name(pipeline: str) -> str:
    return f"{pipeline}/{STAGE}"


def final_choice(pipeline: Pipeline) -> dict:
    """What the final stage trained on: checkpoint, stddev, threshold and its recycle period. Raises GafiError
    unless the pipeline is complete."""
    current = pipeline.current_stage()
    if current is not None:
        raise GafiError(f"pipeline {pipeline.name!r} is not finished (it is at stage {current}); run it to the end first")
    study = pipeline.stage_study("final")
    fixed = pipeline.layout(study, "final")["fixed"]
    return {
        "checkpoint": int(fixed["checkpoint"]),
        "stddev": float(fixed["stddev"]),
        "threshold": float(fixed["threshold"]),
        "recycle_every": stage_spec(pipeline.spec, "final").recycle_every,
    }


class AblationPlan:
    """The loop's plan for a pipeline's ablation: one stage, one slot per (variant, seed of the final stage)."""

    stages = (STAGE,)

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.storage = pipeline.storage
        self.spec = pipeline.spec
        self.name = study_name(pipeline.name)
        self.choice = final_choice(pipeline)
        self.seeds = grid(pipeline.spec, "final")

    def study(self) -> optuna.Study | None:
        try:
            study = optuna.load_study(study_name=self.name, storage=self.storage, pruner=optuna.pruners.NopPruner())
        except KeyError:
            return None
        if study.user_attrs.get(FORMAT_ATTR) != STORAGE_FORMAT:
            raise GafiError(f"{self.name} in {storage_name(self.storage)} was not written by this gafi-opt: delete it or use a new storage")
        return study

    def ensure_stage(self, stage: str = STAGE, ready_wait: float = READY_WAIT_S) -> optuna.Study:
        """The study, created once with the choice it ablates (its slots are enqueued by the loop's sweep)."""
        study = self.study()
        if study is None:
            try:
                study = optuna.create_study(study_name=self.name, storage=self.storage, direction="maximize", pruner=optuna.pruners.NopPruner())
            except optuna.exceptions.DuplicatedStudyError:
                return self.ensure_stage(stage, ready_wait)
            study.set_user_attr(FORMAT_ATTR, STORAGE_FORMAT)
            study.set_user_attr(ATTR, self.choice)
            with warnings.catch_warnings():  # set_metric_names is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(["val CAS"])
            _publish_note(study, self.pipeline.name, self.choice)
        if study.user_attrs.get(ATTR) != self.choice:
            raise GafiError(
                f"{self.name} in {storage_name(self.storage)} ablates another choice ({study.user_attrs.get(ATTR)}); delete it to start again"
            )
        return study

    def layout(self, study: optuna.Study, stage: str = STAGE) -> dict:
        return {"slots": [{"variant": v.name, "seed": seed} for v in VARIANTS for seed in self.seeds], "fixed": {}}

    def slot_views(self) -> list[slots.SlotView]:
        study = self.study()
        return [] if study is None else slots.views(self.storage, study._study_id, self.layout(study)["slots"])

    def current_stage(self, stages: tuple[str, ...] = stages) -> str | None:
        views = self.slot_views()
        return STAGE if STAGE in stages and not (views and all(v.settled for v in views)) else None

    def trial_config(self, trial: optuna.Trial, stage: str, layout: dict) -> TrialConfig:
        # The slot's variant and seed arrive as enqueued (fixed) parameters.
        variant = trial.suggest_categorical("variant", [v.name for v in VARIANTS])
        seed = trial.suggest_int("seed", 0, SEED_MAX)
        return BY_NAME[variant].config(self.choice, seed)

    def describe(self, config: TrialConfig) -> str:
        return f"ablation of {self.pipeline.name}: " + config.describe()

    def trial_to_reuse(self, stage: str, config: TrialConfig, fixed: dict) -> tuple[FrozenTrial, str] | None:
        """A finished trial with the same data recipe: one of the final stage, or another variant's."""
        for trial in self.pipeline.finished_trials("final"):
            if trial.state == TrialState.COMPLETE and same_recipe(FULL.config(self.choice, trial.params["seed"]), config):
                return trial, f"final stage, trial {trial.number}"
        study = self.study()
        for trial in [] if study is None else study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if same_recipe(BY_NAME[trial.params["variant"]].config(self.choice, trial.params["seed"]), config):
                return trial, f"ablation trial {trial.number} ({trial.params['variant']})"
        return None


def variant_trials(pipeline: Pipeline) -> dict[str, list[FrozenTrial]] | None:
    """The complete trial of every finished slot, by variant; None when the pipeline has no ablation study."""
    try:
        study = optuna.load_study(study_name=study_name(pipeline.name), storage=pipeline.storage)
    except KeyError:
        return None
    trials = {t._trial_id: t for t in study.get_trials(deepcopy=False)}
    layout = [{} for _ in range(1 + max((int(t.system_attrs[slots.SLOT]) for t in trials.values() if slots.SLOT in t.system_attrs), default=-1))]
    found: dict[str, list[FrozenTrial]] = {v.name: [] for v in VARIANTS}
    for view in slots.views(pipeline.storage, study._study_id, layout):
        trial = trials.get(view.done.trial_id) if view.done is not None else None
        if trial is not None and trial.state == TrialState.COMPLETE and trial.params.get("variant") in found:
            found[trial.params["variant"]].append(trial)
    return found


def ablated_choice(pipeline: Pipeline) -> dict | None:
    """The final choice the ablation study was made for (None without a study)."""
    try:
        return optuna.load_study(study_name=study_name(pipeline.name), storage=pipeline.storage).user_attrs.get(ATTR)
    except KeyError:
        return None


def _publish_note(study: optuna.Study, pipeline: str, choice: dict) -> None:
    """A note for optuna-dashboard saying what the ablation trains (never fails the run)."""
    lines = [
        f"### Ablation of {pipeline}",
        "",
        (
            f"The final choice (checkpoint {choice['checkpoint']}, stddev {choice['stddev']:g}, threshold {choice['threshold']:g}, "
            f"set renewed every {choice['recycle_every']} epoch(s)) with techniques switched off, one classifier per final-stage seed:"
        ),
        "",
        "| variant | filter | expansion | recycling |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {v.label} | {'on' if v.filter else 'off'} | {'on' if v.expansion else 'off'} | {'on' if v.recycling else 'off'} |" for v in VARIANTS
    ]
    try:
        optuna_dashboard.save_note(study, "\n".join(lines))
    except (OSError, optuna.exceptions.OptunaError) as exc:  # the dashboard note is a courtesy
        log.warning("could not write the dashboard note of %s: %s", study.study_name, one_line(exc))
