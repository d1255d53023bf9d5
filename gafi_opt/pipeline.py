"""A pipeline in an Optuna storage: a root study holding the spec, and one study per stage.

Study names: `<name>` (root, no trials: the spec, the real baseline and the run's state
in its user attrs) and `<name>/<stage>` for each of STAGES. Whoever finds a stage
complete creates the next one; creation is atomic (Optuna refuses a duplicate study
name). A stage's work is a fixed list of slots (gafi_opt/slots.py: one per grid point, or
one per trial of a budgeted search), each finished by exactly one trial; a stage is
complete when every slot is. The creator stores the layout and enqueues one trial per
slot; should it die half-way, the others complete the layout after a grace period.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import warnings

import optuna
from optuna.trial import TrialState

from gafi_opt import slots
from gafi_opt.errors import GafiError
from gafi_opt.reuse import same_recipe
from gafi_opt.spec import Spec
from gafi_opt.stages import SEARCH_STAGES, SEARCHED, STAGES, TrialConfig, budgeted_start, grid, is_grid, make_pruner, make_sampler, trial_budget, trial_config
from gafi_opt.storage import open_storage, redact

READY_WAIT_S = 60.0  # how long a stage may stay half-created before other workers complete it

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
        # The stored spec never holds a password (it is shown by dashboards and exports), and the
        # storage a pipeline lives in is not part of what it computes.
        if stored is None:
            study.set_user_attr(SPEC_ATTR, dataclasses.replace(spec, storage=redact(spec.storage)).to_json())
        elif dataclasses.replace(Spec.from_json(stored), storage="") != dataclasses.replace(spec, storage=""):
            raise GafiError(
                f"pipeline {spec.name!r} already exists in {redact(url)} with a different spec; "
                "choose another name (--set name=...) or storage"
            )
        return cls(storage, spec, url)

    @classmethod
    def load(cls, storage_url: str, name: str) -> "Pipeline":
        storage = open_storage(storage_url, must_exist=True)
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

    def ensure_stage(self, stage: str, ready_wait: float = READY_WAIT_S) -> optuna.Study:
        """The stage's study, ready to work on: created once (layout stored, one trial per slot enqueued).

        A stage another worker is creating is waited for up to `ready_wait` seconds; past that
        its creator is presumed dead and the layout is completed here (missing slot trials are
        enqueued by the workers' sweep, and tickets make a late duplicate harmless).
        """
        study = self.stage_study(stage)
        if study is None:
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
                study = self.stage_study(stage)  # another worker created it first
            else:
                self._initialise_stage(study, stage, fixed)
                return study
        deadline = time.monotonic() + ready_wait
        while not study.user_attrs.get("ready"):
            if time.monotonic() > deadline:
                self._describe_stage(study, stage)
                study.set_user_attr("ready", True)
                break
            time.sleep(0.2)
        return study

    def _initialise_stage(self, study: optuna.Study, stage: str, fixed: dict) -> None:
        with warnings.catch_warnings():  # set_metric_names is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["val CAS"])
        layout = self._describe_stage(study, stage, fixed)
        for index, params in enumerate(layout["slots"]):
            slots.enqueue(self.storage, study._study_id, index, params)
        study.set_user_attr("ready", True)

    def _describe_stage(self, study: optuna.Study, stage: str, fixed: dict | None = None) -> dict:
        layout = self.layout(study, stage, fixed)
        study.set_user_attr("stage", stage)
        study.set_user_attr("fixed", layout["fixed"])
        return layout

    def layout(self, study: optuna.Study, stage: str, fixed: dict | None = None) -> dict:
        """The stage's slots and the values fixed by earlier stages, as first stored (test-and-set)."""
        found = slots.layout(self.storage, study._study_id)
        if found is None:
            legacy = fixed is None and "fixed" in study.user_attrs  # created before layouts existed
            if fixed is None:  # such stages keep the values they ran with
                fixed = study.user_attrs["fixed"] if legacy else self.fixed_values(stage)
            found = slots.layout(self.storage, study._study_id, {"slots": self.slot_params(stage), "fixed": fixed, "legacy": legacy})
        return found

    def slot_params(self, stage: str) -> list[dict]:
        return stage_slot_params(self.spec, stage)

    def slot_views(self, stage: str, study: optuna.Study | None = None) -> list[slots.SlotView]:
        """Each slot's state (a read: a stage whose layout is not stored yet is read with the spec's slots)."""
        study = study or self.stage_study(stage)
        if study is None:
            return []
        stored = slots.layout(self.storage, study._study_id)
        return slots.views(self.storage, study._study_id, stored["slots"] if stored else self.slot_params(stage))

    def fixed_values(self, stage: str) -> dict:
        """What the stages before `stage` chose (the best of each)."""
        index = STAGES.index(stage)
        fixed: dict = {}
        if stage == "baseline":
            from gafi_opt.checkpoints import checkpoint_paths  # torch: only where checkpoints are read

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
        views = self.slot_views(stage)
        if not views:
            return list(grid(self.spec, stage))
        return [v.params[SEARCHED[stage]] for v in views if v.done is None]

    def stage_complete(self, stage: str) -> bool:
        """Every slot finished by one trial (or given up after repeated errors)."""
        views = self.slot_views(stage)
        return bool(views) and all(v.settled for v in views)

    def current_stage(self, stages=STAGES) -> str | None:
        """The first of `stages` that is not complete, or None when they all are."""
        for stage in stages:
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

    def trial_to_reuse(self, stage: str, config: TrialConfig, fixed: dict) -> tuple[optuna.trial.FrozenTrial, str] | None:
        """An earlier search stage's best trial with the same data recipe as `config`, and its name.

        Only the best trials can coincide: a later stage fixes every earlier value to the best.
        """
        if stage not in SEARCH_STAGES:
            return None
        for earlier in SEARCH_STAGES[: SEARCH_STAGES.index(stage)]:
            best = self.best_trial(earlier)
            if same_recipe(trial_config(earlier, best.params[SEARCHED[earlier]], fixed, self.spec), config):
                return best, f"{earlier} stage, trial {best.number}"
        return None

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


def stage_slot_params(spec: Spec, stage: str) -> list[dict]:
    """One entry per slot: a grid point's fixed value, or {} for each trial of a budgeted search
    (whose first slot may be fixed: stages.budgeted_start)."""
    if is_grid(spec, stage):
        return [{SEARCHED[stage]: value} for value in grid(spec, stage)]
    slots = [{} for _ in range(trial_budget(spec, stage))]
    start = budgeted_start(spec, stage)
    if start is not None:
        slots[0] = {SEARCHED[stage]: start}
    return slots


def pipeline_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of the gafi-opt pipelines in a storage."""
    return sorted(
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False) if SPEC_ATTR in s.user_attrs
    )
