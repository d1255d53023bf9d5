"""A pipeline in an Optuna storage: a root study holding the spec, and one study per stage.

Study names: `<name>` (root, no trials: the spec, the real baseline and the run's state
in its user attrs) and `<name>/<stage>` for each of STAGES. Whoever finds a stage
complete creates the next one; creation is atomic (Optuna refuses a duplicate study
name), and only the creator enqueues the grid, so it is enqueued exactly once.
"""

from __future__ import annotations

import statistics
import time
import warnings

import optuna
from optuna.trial import TrialState

from gafi_opt.checkpoints import checkpoint_paths
from gafi_opt.errors import GafiError
from gafi_opt.spec import Spec
from gafi_opt.stages import SEARCHED, STAGES, grid, is_grid, make_pruner, make_sampler, trial_budget
from gafi_opt.storage import open_storage, redact

SPEC_ATTR = "gafi_spec"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Pipeline:
    def __init__(self, storage: optuna.storages.BaseStorage, spec: Spec, storage_url: str = ""):
        self.storage = storage
        self.spec = spec
        self.name = spec.name
        self.storage_url = storage_url

    # ------------------------------------------------------------ opening

    @classmethod
    def create_or_load(cls, spec: Spec, storage_url: str | None = None) -> "Pipeline":
        """Open the pipeline `spec.name`, registering the spec if the storage has none yet."""
        url = storage_url or spec.storage_url
        storage = open_storage(url)
        study = optuna.create_study(study_name=spec.name, storage=storage, load_if_exists=True)
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is None:
            study.set_user_attr(SPEC_ATTR, spec.to_json())
        elif Spec.from_json(stored) != spec:
            raise GafiError(
                f"pipeline {spec.name!r} already exists in {redact(url)} with a different spec; "
                "choose another name (--set name=...) or storage"
            )
        return cls(storage, spec, url)

    @classmethod
    def load(cls, storage_url: str, name: str) -> "Pipeline":
        storage = open_storage(storage_url)
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            known = ", ".join(pipeline_names(storage)) or "none"
            raise GafiError(f"no pipeline {name!r} in {redact(storage_url)} (pipelines there: {known})") from None
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is None:
            raise GafiError(f"study {name!r} in {redact(storage_url)} is not a gafi-opt pipeline")
        return cls(storage, Spec.from_json(stored), storage_url)

    # ------------------------------------------------------------ root attributes

    @property
    def root(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.storage)

    def set_attr(self, key: str, value) -> None:
        self.root.set_user_attr(key, value)

    def attrs(self) -> dict:
        return self.root.user_attrs

    # ------------------------------------------------------------ stages

    def study_name(self, stage: str) -> str:
        return f"{self.name}/{stage}"

    def stage_study(self, stage: str) -> optuna.Study | None:
        try:
            return optuna.load_study(
                study_name=self.study_name(stage),
                storage=self.storage,
                sampler=make_sampler(self.spec, stage),
                pruner=make_pruner(self.spec, stage),
            )
        except KeyError:
            return None

    def ensure_stage(self, stage: str) -> optuna.Study:
        """The stage's study, creating it (fixed values from earlier stages, grid enqueued) once."""
        study = self.stage_study(stage)
        if study is not None:
            return study
        fixed = self.fixed_values(stage)
        try:
            study = optuna.create_study(
                study_name=self.study_name(stage),
                storage=self.storage,
                direction="maximize",
                sampler=make_sampler(self.spec, stage),
                pruner=make_pruner(self.spec, stage),
            )
        except optuna.exceptions.DuplicatedStudyError:
            return self.stage_study(stage)  # another worker created it first
        with warnings.catch_warnings():  # set_metric_names is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["val CAS"])
        study.set_user_attr("stage", stage)
        study.set_user_attr("fixed", fixed)
        if is_grid(self.spec, stage):
            for value in grid(self.spec, stage):
                study.enqueue_trial({SEARCHED[stage]: value}, skip_if_exists=True)
        study.set_user_attr("ready", True)
        return study

    def fixed_values(self, stage: str) -> dict:
        """What the stages before `stage` chose (the best of each)."""
        index = STAGES.index(stage)
        fixed: dict = {}
        if stage == "baseline":
            available = checkpoint_paths(self.spec)
            if not available:
                raise GafiError(f"no generator checkpoints for pipeline {self.name!r}: train the generator first")
            fixed["last_checkpoint"] = max(available)
        for earlier in STAGES[1:index]:
            if earlier != "final":
                fixed[SEARCHED[earlier]] = self.best_value(earlier)
        return fixed

    def finished_trials(self, stage: str) -> list[optuna.trial.FrozenTrial]:
        study = self.stage_study(stage)
        return [] if study is None else study.get_trials(deepcopy=False, states=FINISHED)

    def missing_points(self, stage: str) -> list:
        """Grid points of an exhaustive stage that have no finished trial yet."""
        done = {t.params.get(SEARCHED[stage]) for t in self.finished_trials(stage)}
        return [v for v in grid(self.spec, stage) if v not in done]

    def stage_complete(self, stage: str) -> bool:
        if self.stage_study(stage) is None:
            return False
        if is_grid(self.spec, stage):
            return not self.missing_points(stage)
        return len(self.finished_trials(stage)) >= trial_budget(self.spec, stage)

    def current_stage(self) -> str | None:
        """The first stage that is not complete, or None when the pipeline is done."""
        for stage in STAGES:
            if not self.stage_complete(stage):
                return stage
        return None

    def best_trial(self, stage: str) -> optuna.trial.FrozenTrial:
        """The best complete trial: by val CAS, or by test accuracy under paper selection."""
        complete = [t for t in self.finished_trials(stage) if t.state == TrialState.COMPLETE]
        if not complete:
            raise GafiError(f"stage {stage} of pipeline {self.name!r} has no complete trial")
        key = "test_acc" if self.spec.selection == "test" else "val_acc"
        return max(complete, key=lambda t: (t.user_attrs.get(key, t.value), -t.number))

    def best_value(self, stage: str):
        return self.best_trial(stage).params[SEARCHED[stage]]

    def seed_summary(self, stage: str) -> dict:
        """Mean and spread over the seeds of the baseline or final stage."""
        trials = [t for t in self.finished_trials(stage) if t.state == TrialState.COMPLETE]
        vals = [t.user_attrs["val_acc"] for t in trials]
        tests = [t.user_attrs["test_acc"] for t in trials]
        if not trials:
            return {}
        return {
            "val": statistics.fmean(vals),
            "test": statistics.fmean(tests),
            "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "seeds": len(trials),
        }

    def wait_until_ready(self, stage: str, timeout: float = 60.0) -> optuna.Study:
        """A stage created by another worker is usable once its grid is enqueued."""
        deadline = time.monotonic() + timeout
        while True:
            study = self.ensure_stage(stage)
            if study.user_attrs.get("ready"):
                return study
            if time.monotonic() > deadline:
                raise GafiError(f"stage {stage} of {self.name!r} was created but never made ready")
            time.sleep(0.5)


def pipeline_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of the gafi-opt pipelines in a storage."""
    return sorted(
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False) if SPEC_ATTR in s.user_attrs
    )
