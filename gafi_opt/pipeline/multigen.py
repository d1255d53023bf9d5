"""A multi-generator study in a storage: K finished pipelines' generators, one CAS classifier per seed.

The study is `multigen/<A+B+...>` (member names sorted) in the pipelines' storage. Its user attrs name
the members and what each contributes (best checkpoint, stddev, threshold); its work is one slot per
seed (slot i is seed `spec.seed + i`), run by the one worker loop like a pipeline's stage, so a process
killed mid-trial is detected by its heartbeat and its seed re-run, every seed is finished exactly once,
and asking for more seeds later adds slots. What a trial trains lives in gafi_opt.experiments.multigen (the
mix of generators it draws from, in gafi_opt.result.multigen).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

import optuna
import optuna_dashboard
from optuna.trial import FrozenTrial

from gafi_opt.errors import GafiError, one_line
from gafi_opt.pipeline.loop import READY_WAIT_S
from gafi_opt.pipeline.store import FORMAT_ATTR, STORAGE_FORMAT, Pipeline
from gafi_opt.search.stages import TrialConfig
from gafi_opt.spec import Spec
from gafi_opt.storages import open_storage, slots, storage_name

log = logging.getLogger(__name__)
PREFIX = "multigen/"
ATTR = "gafi_multigen"  # the study's user attr holding its members
STAGE = "multigen"
SEED_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Member:
    """A finished pipeline's generator as multigen uses it: its best checkpoint, stddev and threshold."""

    pipeline: str
    checkpoint: int
    stddev: float
    threshold: float

    def describe(self) -> str:
        return f"{self.pipeline}: checkpoint {self.checkpoint}, stddev {self.stddev:g}, threshold {self.threshold:g}"


def study_name(names: list[str]) -> str:
    return PREFIX + "+".join(sorted(names))


def load_members(storage, names: list[str]) -> tuple[list[Pipeline], list[Member]]:
    """The member pipelines (sorted by name) and what each contributes. Raises GafiError."""
    storage = open_storage(storage, must_exist=True)
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise GafiError("--pipelines needs at least one pipeline name")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GafiError(f"pipeline {duplicates[0]!r} is listed more than once")
    pipelines = [Pipeline.load(storage, name) for name in sorted(names)]
    _check_compatible([p.spec for p in pipelines])
    members = []
    for pipeline in pipelines:
        if pipeline.spec.is_diffusion:  # a Member carries no sampler, guidance or steps
            raise GafiError(f"pipeline {pipeline.name!r} has a diffusion generator: multigen combines GAN pipelines only")
        if not pipeline.stage_complete("threshold"):
            stage = pipeline.current_stage()
            raise GafiError(f"pipeline {pipeline.name!r} has not finished its threshold stage (it is at stage {stage}); run it first")
        members.append(
            Member(pipeline.name, int(pipeline.best_value("checkpoint")), float(pipeline.best_value("stddev")), float(pipeline.best_value("threshold")))
        )
    return pipelines, members


def _check_compatible(specs: list[Spec]) -> None:
    first = specs[0]
    for other in specs[1:]:
        for part in ("data", "cas"):
            a, b = getattr(first, part), getattr(other, part)
            if a != b:
                key = next(f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name))
                raise GafiError(
                    f"pipelines {first.name!r} and {other.name!r} differ in {part}.{key} "
                    f"({getattr(a, key)!r} vs {getattr(b, key)!r}): multigen needs the same data and CAS recipe"
                )
        if first.objective != other.objective:
            raise GafiError(f"pipelines {first.name!r} and {other.name!r} differ in objective ({first.objective} vs {other.objective})")


class MultigenPlan:
    """The loop's plan for a multigen study: one stage, one slot per seed."""

    stages = (STAGE,)

    def __init__(self, storage, pipelines: list[Pipeline], members: list[Member], seeds: int):
        if seeds < 1:
            raise GafiError(f"--seeds must be >= 1, got {seeds}")
        self.storage = storage
        self.pipelines = pipelines
        self.members = members
        self.spec = pipelines[0].spec  # members share data and CAS recipe
        self.name = study_name([m.pipeline for m in members])
        self.seeds = [self.spec.seed + i for i in range(seeds)]

    def study(self) -> optuna.Study | None:
        try:
            study = optuna.load_study(study_name=self.name, storage=self.storage, pruner=optuna.pruners.NopPruner())
        except KeyError:
            return None
        check_study(study, self.storage)
        return study

    def ensure_stage(self, stage: str = STAGE, ready_wait: float = READY_WAIT_S) -> optuna.Study:
        """The study, created once with its members; refuses one run with other member settings."""
        study = self.study()
        if study is None:
            try:
                study = optuna.create_study(study_name=self.name, storage=self.storage, direction="maximize", pruner=optuna.pruners.NopPruner())
            except optuna.exceptions.DuplicatedStudyError:
                return self.ensure_stage(stage, ready_wait)
            study.set_user_attr(FORMAT_ATTR, STORAGE_FORMAT)
            study.set_user_attr(ATTR, [dataclasses.asdict(m) for m in self.members])
            study.set_user_attr("generators", len(self.members))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(["val CAS"])
            _publish_note(study, self.members)
        stored, wanted = study.user_attrs.get(ATTR), [dataclasses.asdict(m) for m in self.members]
        if stored != wanted:
            raise GafiError(
                f"{self.name} in {storage_name(self.storage)} was run with other member settings ({_listing(stored)}); "
                f"the pipelines' best values are now {_listing(wanted)}"
            )
        return study

    def layout(self, study: optuna.Study, stage: str = STAGE) -> dict:
        return {"slots": [{"seed": seed} for seed in self.seeds], "fixed": {}}

    def slot_views(self) -> list[slots.SlotView]:
        study = self.study()
        return [] if study is None else slots.views(self.storage, study._study_id, self.layout(study)["slots"])

    def current_stage(self, stages: tuple[str, ...] = stages) -> str | None:
        views = self.slot_views()
        return STAGE if STAGE in stages and not (views and all(v.settled for v in views)) else None

    def trial_config(self, trial: optuna.Trial, stage: str, layout: dict) -> TrialConfig:
        seed = trial.suggest_int("seed", 0, SEED_MAX)  # the slot's seed, enqueued as a fixed param
        # The members' own checkpoints, stddevs and thresholds make the set; the config gives the seed and N=1.
        return TrialConfig(STAGE, 0, 1.0, None, 1, seed)


    def describe(self, config: TrialConfig) -> str:
        return f"multigen of {len(self.members)}: " + "; ".join(m.describe() for m in self.members) + f"; seed {config.seed}"


def check_study(study: optuna.Study, storage) -> None:
    if study.user_attrs.get(FORMAT_ATTR) != STORAGE_FORMAT:
        raise GafiError(
            f"{study.study_name} in {storage_name(storage)} was written by an older gafi-opt; "
            "this gafi-opt reads multigen studies it wrote itself: run multigen again in a new storage"
        )


def finished_trials(storage, study: optuna.Study) -> list[FrozenTrial]:
    """The trial that finished each seed's slot (every slot that has one), by slot."""
    trials = study.get_trials(deepcopy=False)
    count = 1 + max((int(t.system_attrs[slots.SLOT]) for t in trials if slots.SLOT in t.system_attrs), default=-1)
    by_id = {t._trial_id: t for t in trials}
    views = slots.views(storage, study._study_id, [{} for _ in range(count)])
    return [by_id[v.done.trial_id] for v in views if v.done is not None and v.done.trial_id in by_id]


def multigen_studies(storage) -> list[optuna.study.StudySummary]:
    return [s for s in optuna.get_all_study_summaries(storage, include_best_trial=False) if ATTR in s.user_attrs]


def _listing(members: list[dict] | None) -> str:
    return "; ".join(f"{m['pipeline']} {m['checkpoint']}/{m['stddev']:g}/{m['threshold']:g}" for m in members or [])


def _publish_note(study: optuna.Study, members: list[Member]) -> None:
    """A note for optuna-dashboard saying what the study trains on (never fails the run)."""
    lines = [f"### {study.study_name}", "", f"One CAS classifier per seed on a set drawn from {len(members)} generator(s), renewed every epoch:", ""]
    lines += ["| pipeline | checkpoint | stddev | threshold |", "|---|---|---|---|"]
    lines += [f"| {m.pipeline} | {m.checkpoint} | {m.stddev:g} | {m.threshold:g} |" for m in members]
    try:
        optuna_dashboard.save_note(study, "\n".join(lines))
    except Exception as exc:  # the dashboard note is a courtesy
        log.warning("could not write the dashboard note of %s: %s", study.study_name, one_line(exc))
