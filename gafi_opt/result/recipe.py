"""Which synthetic set to take away: a pipeline's final choice, any one trial's recipe, or a multigen mix.

A `Recipe` names where its knobs come from and holds them: one generator's TrialConfig (checkpoint,
stddev, threshold, seed), or the members of a multigen study (each pipeline's own best knobs). Every
way of asking for one that cannot be answered (no such pipeline, stage or trial, a pipeline with no
best yet) raises GafiError with one line naming the problem.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import optuna

from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline
from gafi_opt.pipeline.multigen import ATTR as MULTIGEN_ATTR
from gafi_opt.pipeline.multigen import PREFIX as MULTIGEN_PREFIX
from gafi_opt.pipeline.multigen import Member, check_study
from gafi_opt.search.stages import SEARCHED, STAGES, TrialConfig, trial_config
from gafi_opt.storages import open_storage, storage_name


@dataclass(frozen=True)
class Recipe:
    name: str  # the pipeline, or the multigen study
    origin: str  # "final choice", "checkpoint stage, trial 4", "multigen"
    pipelines: tuple[Pipeline, ...]  # one, or a multigen study's members
    config: TrialConfig | None = None  # one generator's knobs
    members: tuple[Member, ...] = ()  # a multigen study's

    @property
    def seed(self) -> int:
        """The default sampling seed: the trial's own (its first synthetic set again), else the spec's."""
        return self.config.seed if self.config is not None else self.pipelines[0].spec.seed

    def knobs(self) -> dict:
        """What makes the set, as plain values (for a sidecar or a note); threshold None means no filter."""
        if self.members:
            return {"members": [dataclasses.asdict(m) for m in self.members]}
        c = self.config
        return {"checkpoint": c.checkpoint, "stddev": c.stddev, "threshold": c.threshold, "filter": c.threshold is not None}

    def describe(self) -> str:
        if self.members:
            return f"{self.name}: " + "; ".join(m.describe() for m in self.members)
        threshold = "no filter" if self.config.threshold is None else f"threshold {self.config.threshold:g}"
        return f"{self.name} ({self.origin}): checkpoint {self.config.checkpoint}, stddev {self.config.stddev:g}, {threshold}"


def resolve(storage, name: str, stage: str | None = None, trial: int | None = None) -> Recipe:
    """The recipe `gafi-opt sample` takes: a multigen study (`multigen/A+B`), one trial, or the final choice."""
    storage = open_storage(storage, must_exist=True)
    if (stage is None) != (trial is None):
        raise GafiError("--stage and --trial go together: name the stage and the trial number in it")
    if name.startswith(MULTIGEN_PREFIX):
        if stage is not None:
            raise GafiError(f"{name} is a multigen study: it has no stages, sample it without --stage and --trial")
        return multigen_recipe(storage, name)
    pipeline = Pipeline.load(storage, name)
    return best_recipe(pipeline) if stage is None else trial_recipe(pipeline, stage, trial)


def best_recipe(pipeline: Pipeline) -> Recipe:
    """The pipeline's choice: the best checkpoint, stddev and threshold (its threshold stage must be complete)."""
    if not pipeline.stage_complete("threshold"):
        stage = pipeline.current_stage()
        raise GafiError(f"pipeline {pipeline.name!r} has no best yet (it is at stage {stage}): run it to the end first")
    final = pipeline.stage_study("final")
    fixed = pipeline.layout(final, "final")["fixed"] if final is not None else pipeline.fixed_values("final")
    return Recipe(pipeline.name, "final choice", (pipeline,), trial_config("final", pipeline.spec.seed, fixed, pipeline.spec))


def trial_recipe(pipeline: Pipeline, stage: str, number: int) -> Recipe:
    """Trial `number` of `stage`: its checkpoint, stddev, threshold and seed as it trained."""
    if stage not in STAGES:
        raise GafiError(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
    study = pipeline.stage_study(stage)
    if study is None:
        raise GafiError(f"pipeline {pipeline.name!r} has not started its {stage} stage yet")
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not found:
        raise GafiError(f"no trial {number} in the {stage} stage of pipeline {pipeline.name!r} (trials 0 to {len(study.trials) - 1})")
    chosen = found[0]
    if SEARCHED[stage] not in chosen.params:
        raise GafiError(f"trial {number} of the {stage} stage of pipeline {pipeline.name!r} has no recipe yet (it is {chosen.state.name})")
    config = trial_config(stage, chosen.params[SEARCHED[stage]], pipeline.layout(study, stage)["fixed"], pipeline.spec)
    return Recipe(pipeline.name, f"{stage} stage, trial {number}", (pipeline,), config)


def multigen_recipe(storage, name: str) -> Recipe:
    """A multigen study's mix: its members as the study stored them (what its classifiers trained on)."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise GafiError(f"no multigen study {name!r} in {storage_name(storage)} (run `gafi-opt multigen` first)") from None
    check_study(study, storage)
    stored = study.user_attrs.get(MULTIGEN_ATTR)
    if not stored:
        raise GafiError(f"{name} in {storage_name(storage)} is not a multigen study")
    members = tuple(Member(**m) for m in stored)
    pipelines = tuple(Pipeline.load(storage, m.pipeline) for m in members)
    return Recipe(name, "multigen", pipelines, members=members)
