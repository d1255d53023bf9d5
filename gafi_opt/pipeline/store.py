"""A pipeline in an Optuna storage: a root study holding the spec, and one study per stage.

Study names: `<name>` (root: the spec, the real baseline and the run's state in its user attrs;
once the pipeline is complete, one trial holding its result for Optuna's tools, which nothing
here reads: gafi_opt.report.result) and `<name>/<stage>` for each of its stages (a GAN's STAGES; a
diffusion generator's add its sampling knobs: gafi_opt.search.stages.pipeline_stages). Whoever finds a stage
complete creates the next one; creation is atomic (Optuna refuses a duplicate study
name). A stage's work is a fixed list of slots (gafi_opt.storages.slots: one per grid point, or
one per trial of a budgeted search), each finished by exactly one trial; a stage is
complete when every slot is. The creator stores the layout and enqueues one trial per
slot; should it die half-way, the others complete the layout after a grace period.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings

import optuna
from optuna.trial import TrialState

from gafi_opt.errors import GafiError
from gafi_opt.pipeline.loop import READY_WAIT_S
from gafi_opt.search.pruners import make_pruner
from gafi_opt.search.reuse import same_recipe, same_set
from gafi_opt.search.samplers import make_sampler
from gafi_opt.search.selection import Choice, choose, late_epochs
from gafi_opt.search.stages import SEARCHED, TrialConfig, grid, pipeline_stages, search_stages, slot_params, suggest, trial_config
from gafi_opt.spec import Spec
from gafi_opt.stats import mean_sd
from gafi_opt.storages import TAS_PREFIX, open_storage, redact, set_once, slots, storage_name

SPEC_ATTR = "gafi_spec"  # the spec as one JSON string: what gafi-opt reads
READABLE_SPEC_ATTR = "spec"  # the same spec as a nested dict, for people (optuna studies, optuna-dashboard)
FORMAT_ATTR = "gafi_storage_format"  # what this gafi-opt writes; a pipeline without it was written by 0.1
STORAGE_FORMAT = 2
READS_SINCE = "0.2.0"  # the first gafi-opt version that wrote STORAGE_FORMAT
CHOICE_ATTR = TAS_PREFIX + "choice"  # stage study system attr: the frozen Choice, as JSON
REAL_ONLY_PREFIX = "real_only_seed_"  # root attr per seed of the real-only baseline (gafi_opt.train.real_only)
QUALITY_ATTR = "quality"  # root attr: distribution metrics of the baseline's and the final choice's sets (gafi_opt.result.quality)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Pipeline:
    """One pipeline in an opened storage (gafi_opt.storages.open_storage): its spec, stages and results."""

    def __init__(self, storage: optuna.storages.BaseStorage, spec: Spec):
        self.storage = storage
        self.spec = spec
        self.name = spec.name
        self.stages = pipeline_stages(spec)  # in order; the search stages are those between baseline and final
        self.search_stages = search_stages(spec)

    @property
    def storage_url(self) -> str:
        return self.storage.url

    # ------------------------------------------------------------ opening

    @classmethod
    def create_or_load(cls, spec: Spec, storage: optuna.storages.BaseStorage | str) -> "Pipeline":
        """Open the pipeline `spec.name`, registering the spec if the storage has none yet.

        `storage`: an opened storage (gafi_opt.storages.open_storage), or a URL to open.
        """
        storage = open_storage(storage)
        # The root's direction and metric are those of the result trial it gets when complete.
        study = optuna.create_study(study_name=spec.name, storage=storage, load_if_exists=True, direction="maximize")
        stored = study.user_attrs.get(SPEC_ATTR)
        # The stored spec never holds a password (it is shown by dashboards and exports), and the
        # storage a pipeline lives in is not part of what it computes.
        if stored is None:
            shown = dataclasses.replace(spec, storage=redact(spec.storage)).to_json()
            study.set_user_attr(FORMAT_ATTR, STORAGE_FORMAT)
            study.set_user_attr(SPEC_ATTR, shown)
            study.set_user_attr(READABLE_SPEC_ATTR, json.loads(shown))
            with warnings.catch_warnings():  # set_metric_names is marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(["final val CAS"])  # the result trial's value: the final stage's mean val CAS
            return cls(storage, spec)
        _check_format(study, storage)
        if dataclasses.replace(Spec.from_json(stored), storage="") != dataclasses.replace(spec, storage=""):
            raise GafiError(
                f"pipeline {spec.name!r} already exists in {storage_name(storage)} with a different spec; "
                "choose another name (--set name=...) or storage"
            )
        if READABLE_SPEC_ATTR not in study.user_attrs:  # a pipeline stored before the readable copy existed
            study.set_user_attr(READABLE_SPEC_ATTR, json.loads(stored))
        return cls(storage, spec)

    @classmethod
    def load(cls, storage: optuna.storages.BaseStorage | str, name: str) -> "Pipeline":
        """The pipeline `name` in a storage (opened, or a URL of one that exists)."""
        storage = open_storage(storage, must_exist=True)
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            known = ", ".join(pipeline_names(storage)) or "none"
            raise GafiError(f"no pipeline {name!r} in {storage_name(storage)} (pipelines there: {known})") from None
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is None:
            raise GafiError(f"study {name!r} in {storage_name(storage)} is not a gafi-opt pipeline")
        _check_format(study, storage)
        return cls(storage, Spec.from_json(stored))

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
            fixed = self.fixed_values(stage) if fixed is None else fixed
            found = slots.layout(self.storage, study._study_id, {"slots": self.slot_params(stage), "fixed": fixed})
        return found

    def slot_params(self, stage: str) -> list[dict]:
        return slot_params(self.spec, stage)

    def trial_config(self, trial: optuna.Trial, stage: str, layout: dict) -> TrialConfig:
        """The claimed trial's data recipe: its slot's value (or the sampler's) and what earlier stages fixed."""
        return trial_config(stage, suggest(trial, self.spec, stage), layout["fixed"], self.spec)

    def describe(self, config: TrialConfig) -> str:
        return config.describe()

    def slot_views(self, stage: str, study: optuna.Study | None = None) -> list[slots.SlotView]:
        """Each slot's state (a read: a stage whose layout is not stored yet is read with the spec's slots)."""
        study = study or self.stage_study(stage)
        if study is None:
            return []
        stored = slots.layout(self.storage, study._study_id)
        return slots.views(self.storage, study._study_id, stored["slots"] if stored else self.slot_params(stage))

    def fixed_values(self, stage: str) -> dict:
        """What the stages before `stage` chose (the best of each)."""
        index = self.stages.index(stage)
        fixed: dict = {}
        if stage == "baseline":
            from gafi_opt.models.checkpoints import checkpoint_paths  # torch loads only where checkpoints are read

            available = checkpoint_paths(self.spec)
            if not available:
                raise GafiError(f"no generator checkpoints for pipeline {self.name!r}: train the generator first")
            fixed["last_checkpoint"] = max(available)
        for earlier in self.stages[1:index]:
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

    def current_stage(self, stages=None) -> str | None:
        """The first of `stages` (default: all the pipeline's) that is not complete, or None when they all are."""
        for stage in stages or self.stages:
            if not self.stage_complete(stage):
                return stage
        return None

    def choice(self, stage: str) -> Choice:
        """What the stage's selection rule chose (gafi_opt.search.selection), and what it saw.

        Computed from the finished trials; once the stage is complete, frozen in the stage study
        (first writer wins), so every worker, export and figure sees the same value on any machine.
        """
        study = self.stage_study(stage)
        frozen = None if study is None else self.storage.get_study_system_attrs(study._study_id).get(CHOICE_ATTR)
        if frozen is not None:
            return Choice.from_json(json.loads(frozen))
        trials = [] if study is None else study.get_trials(deepcopy=False, states=FINISHED)
        key = "test_acc" if self.spec.selection == "test" else "val_acc"
        rule = self.spec.stage(stage).rule if stage in self.search_stages else "argmax"
        made = choose(rule, trials, SEARCHED[stage], grid(self.spec, stage), key, late_epochs(self.spec.cas.epochs, self.spec.cas.lr_milestones))
        if made is None:
            raise GafiError(f"stage {stage} of pipeline {self.name!r} has no complete trial")
        if stage in self.search_stages and self.stage_complete(stage):
            set_once(self.storage, study._study_id, CHOICE_ATTR, json.dumps(made.to_json()))
            return Choice.from_json(json.loads(self.storage.get_study_system_attrs(study._study_id)[CHOICE_ATTR]))
        return made

    def best_trial(self, stage: str) -> optuna.trial.FrozenTrial:
        """The complete trial standing for the stage's choice (its best score at the chosen value)."""
        number = self.choice(stage).trial
        return next(t for t in self.finished_trials(stage) if t.number == number)

    def best_value(self, stage: str):
        return self.choice(stage).value

    def trial_to_reuse(self, stage: str, config: TrialConfig, fixed: dict) -> tuple[optuna.trial.FrozenTrial, str] | None:
        """A finished trial that trained on exactly the data `config` would, with the same seed, and its name:
        an earlier search stage's best (a later stage fixes every earlier value to the best, so only the
        best can coincide), or a complete trial of this stage whose set a threshold inside its
        same-set range repeats (gafi_opt.search.reuse.same_set)."""
        if stage not in self.search_stages:
            return None
        earlier = [(e, self.best_trial(e)) for e in self.search_stages[: self.search_stages.index(stage)]]
        own = [(stage, t) for t in self.finished_trials(stage) if t.state == TrialState.COMPLETE]
        for where, trial in earlier + own:
            theirs = trial_config(where, trial.params[SEARCHED[where]], fixed, self.spec)
            if same_recipe(theirs, config) or same_set(trial, theirs, config):
                return trial, f"{where} stage, trial {trial.number}"
        return None

    def seed_summary(self, stage: str) -> dict:
        """Mean and spread over the seeds of the baseline or final stage."""
        trials = [t for t in self.finished_trials(stage) if t.state == TrialState.COMPLETE]
        if not trials:
            return {}
        test, test_std = mean_sd(t.user_attrs["test_acc"] for t in trials)
        return {"val": mean_sd(t.user_attrs["val_acc"] for t in trials)[0], "test": test, "test_std": test_std, "seeds": len(trials)}


    def real_only_seeds(self) -> list[int]:
        """The real-only baseline's seeds: the final stage's."""
        return grid(self.spec, "final")

    def real_only_missing(self) -> list[int]:
        attrs = self.attrs()
        return [seed for seed in self.real_only_seeds() if f"{REAL_ONLY_PREFIX}{seed}" not in attrs]

    def set_real_only(self, seed: int, result: dict) -> None:
        self.set_attr(f"{REAL_ONLY_PREFIX}{seed}", result)

    def real_only_summary(self, attrs: dict | None = None) -> dict:
        """Mean and spread (sample stdev) of the real-only seeds trained so far; {} when none is."""
        attrs = self.attrs() if attrs is None else attrs
        results = [attrs[f"{REAL_ONLY_PREFIX}{s}"] for s in self.real_only_seeds() if f"{REAL_ONLY_PREFIX}{s}" in attrs]
        if not results:
            return {}
        test, test_std = mean_sd(r["test_acc"] for r in results)
        return {
            "val": mean_sd(r["val_acc"] for r in results)[0],
            "test": test,
            "test_std": test_std,
            "seeds": len(results),
            "train_images": results[0]["train_images"],
        }


def pipeline_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of the gafi-opt pipelines in a storage."""
    return sorted(
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False) if SPEC_ATTR in s.user_attrs
    )


def _check_format(study: optuna.Study, storage) -> None:
    """A pipeline written by another storage format is refused in one line (its trials stay untouched)."""
    found = study.user_attrs.get(FORMAT_ATTR)
    if found != STORAGE_FORMAT:
        writer = "gafi-opt 0.1" if found is None else f"storage format {found}"
        raise GafiError(
            f"pipeline {study.study_name!r} in {storage_name(storage)} was written by {writer}; this gafi-opt reads "
            f"pipelines written by gafi-opt {READS_SINCE} or later: run it again in a new storage (or with gafi-opt 0.1)"
        )
