"""The stages as data: what each one searches, what it takes from the stages before, how it samples and prunes.

baseline   the synthetic baseline: last checkpoint, stddev 1, no filter, one fixed set (per seed)
checkpoint which generator epoch (filter at threshold 0, set renewed every N=10 epochs)
stddev     the Expansion Trick's latent stddev, on the best checkpoint
threshold  Dynamic Sample Filtering's confidence threshold, on the best checkpoint and stddev
final      the best of everything, set renewed every epoch (N=1), repeated over seeds
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from gafi_opt.spec import Spec, StageSpec

STAGES = ("baseline", "checkpoint", "stddev", "threshold", "final")
SEARCH_STAGES = ("checkpoint", "stddev", "threshold")  # in order: each fixes its best value for the next
SEARCHED = {"baseline": "seed", "checkpoint": "checkpoint", "stddev": "stddev", "threshold": "threshold", "final": "seed"}
NO_FILTER = None


@dataclass(frozen=True)
class TrialConfig:
    """Everything that decides one CAS trial's synthetic data."""

    stage: str
    checkpoint: int
    stddev: float
    threshold: float | None  # None: no filtering at all
    recycle_every: int  # 0: the set is generated once and kept
    seed: int

    def describe(self) -> str:
        threshold = "off" if self.threshold is None else f"{self.threshold:g}"
        recycle = "never" if not self.recycle_every else f"every {self.recycle_every} epoch(s)"
        return (
            f"stage {self.stage}: checkpoint {self.checkpoint}, stddev {self.stddev:g}, "
            f"filter threshold {threshold}, set renewed {recycle}, seed {self.seed}"
        )


def stage_spec(spec: Spec, stage: str) -> StageSpec:
    """The baseline stage shares the final stage's seeds and runs no pruner."""
    if stage == "baseline":
        return StageSpec(search="grid", values=(), recycle_every=0, pruner="none", seeds=spec.final.seeds)
    return spec.stage(stage)


def grid(spec: Spec, stage: str) -> list:
    """The values of the stage's searched parameter that an exhaustive stage evaluates."""
    if stage in ("baseline", "final"):
        return [spec.seed + i for i in range(spec.final.seeds)]
    values = spec.stage(stage).values
    return [int(v) for v in values] if stage == "checkpoint" else [float(v) for v in values]


def is_grid(spec: Spec, stage: str) -> bool:
    return stage in ("baseline", "final") or spec.stage(stage).search == "grid"


def trial_budget(spec: Spec, stage: str) -> int:
    """Finished trials that complete the stage."""
    points = len(grid(spec, stage))
    if is_grid(spec, stage):
        return points
    return spec.stage(stage).n_trials or max(1, points // 4)


def budgeted_start(spec: Spec, stage: str):
    """The point a budgeted stage evaluates first, or None to let its sampler choose them all.

    The checkpoint stage starts at the last checkpoint: the synthetic baseline's, and the
    choice a user makes without a search, so the search's result is what beats it. (On the
    digits preset the samplers' random first draws otherwise fall on early checkpoints, whose
    CAS is 5-25 points lower, and successive halving lets the first trial set the bar.)
    """
    return max(grid(spec, stage)) if stage == "checkpoint" else None


def suggest(trial: optuna.Trial, spec: Spec, stage: str):
    """The searched parameter, through Optuna's API (grid points arrive as enqueued values)."""
    name = SEARCHED[stage]
    values = grid(spec, stage)
    if is_grid(spec, stage):
        return trial.suggest_categorical(name, values)
    step = _common_step(values)
    if step is None or len(values) < 2:  # an irregular grid: only its own points exist (e.g. checkpoints)
        return trial.suggest_categorical(name, values)
    if stage == "checkpoint":
        return trial.suggest_int(name, min(values), max(values), step=int(step))
    return round(trial.suggest_float(name, min(values), max(values), step=step), 9)  # 1.7, not 1.7000000000000002


def trial_config(stage: str, value, fixed: dict, spec: Spec) -> TrialConfig:
    """The trial's data recipe: its searched value plus what earlier stages fixed."""
    recycle = stage_spec(spec, stage).recycle_every
    if stage == "baseline":
        return TrialConfig(stage, fixed["last_checkpoint"], 1.0, NO_FILTER, 0, int(value))
    if stage == "checkpoint":
        return TrialConfig(stage, int(value), 1.0, 0.0, recycle, spec.seed)
    if stage == "stddev":
        return TrialConfig(stage, fixed["checkpoint"], float(value), 0.0, recycle, spec.seed)
    if stage == "threshold":
        return TrialConfig(stage, fixed["checkpoint"], fixed["stddev"], float(value), recycle, spec.seed)
    return TrialConfig(stage, fixed["checkpoint"], fixed["stddev"], fixed["threshold"], recycle, int(value))


def make_sampler(spec: Spec, stage: str) -> optuna.samplers.BaseSampler:
    """Grid stages run only enqueued trials; a budgeted stage samples with TPE or GP, never twice the same point.

    Every trial of a search stage trains with the same seed, so a point evaluated twice gives
    the same result twice: the budgeted samplers are wrapped so that each proposes a grid point
    no trial of the stage has taken yet (while one is left).
    """
    if is_grid(spec, stage):
        return optuna.samplers.TPESampler(seed=spec.seed)  # never asked: every trial is enqueued
    budget = trial_budget(spec, stage)
    if spec.stage(stage).search == "gp":
        base = optuna.samplers.GPSampler(seed=spec.seed, n_startup_trials=_startup_trials(budget))
    else:
        base = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=_startup_trials(budget))
    return UniquePointSampler(base, SEARCHED[stage], grid(spec, stage))


def _startup_trials(budget: int) -> int:
    """Random trials before the model takes over: a third of the budget, at least 2."""
    return max(2, budget // 3)


def after_first_lr_drop(spec: Spec) -> int:
    """The first CAS epoch trained after the learning rate's first drop.

    Under the paper's schedule (lr 0.1 until 60% of the epochs) val accuracy swings from epoch
    to epoch and does not rank trials (on the digits preset its rank correlation with the final
    val is about zero at epoch 5); it ranks them well once the rate has dropped. Pruners wait for it.
    """
    epochs = spec.cas.epochs
    milestones = sorted(max(1, round(m * epochs)) for m in spec.cas.lr_milestones)
    return min(epochs, milestones[0] + 1) if milestones else max(1, epochs // 4)


def pruner_min_epochs(spec: Spec, stage: str) -> int:
    """Epochs before successive halving / Hyperband may first cut a trial (`pruner_min_epochs`, else after the drop)."""
    sspec = stage_spec(spec, stage)
    if sspec.pruner_min_epochs:
        return min(sspec.pruner_min_epochs, spec.cas.epochs)
    return after_first_lr_drop(spec)


def pruner_warmup(spec: Spec, stage: str) -> int:
    """The first epoch a median / percentile pruner may cut at (`pruner_warmup`, else after the drop)."""
    sspec = stage_spec(spec, stage)
    return sspec.pruner_warmup if sspec.pruner_warmup else after_first_lr_drop(spec)


def make_pruner(spec: Spec, stage: str) -> optuna.pruners.BasePruner:
    sspec = stage_spec(spec, stage)
    epochs = spec.cas.epochs
    if sspec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=sspec.pruner_startup_trials, n_warmup_steps=pruner_warmup(spec, stage))
    if sspec.pruner == "percentile":
        return optuna.pruners.PercentilePruner(
            25.0, n_startup_trials=sspec.pruner_startup_trials, n_warmup_steps=pruner_warmup(spec, stage)
        )
    if sspec.pruner == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=pruner_min_epochs(spec, stage), reduction_factor=sspec.pruner_reduction
        )
    if sspec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=pruner_min_epochs(spec, stage), max_resource=epochs, reduction_factor=sspec.pruner_reduction
        )
    return optuna.pruners.NopPruner()


class UniquePointSampler(optuna.samplers.BaseSampler):
    """Wraps a sampler so that the searched parameter takes a grid point no live or finished trial has.

    A repeated proposal is re-drawn from the base sampler a few times (TPE draws afresh each
    time); if it still repeats (GP's acquisition is deterministic), the nearest untaken grid
    point is used instead. Once every point is taken, proposals pass through unchanged.
    """

    RETRIES = 8
    TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

    def __init__(self, base: optuna.samplers.BaseSampler, name: str, values: list):
        self.base, self.name, self.values = base, name, list(values)

    def _taken(self, study, trial) -> set:
        trials = study.get_trials(deepcopy=False, states=self.TAKEN)
        return {_key(t.params[self.name]) for t in trials if t.number != trial.number and self.name in t.params}

    def _untaken_near(self, value, taken: set):
        free = [v for v in self.values if _key(v) not in taken]
        if not free:
            return value
        return min(free, key=lambda v: (abs(float(v) - float(value)), float(v)))

    def infer_relative_search_space(self, study, trial):
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        params = self.base.sample_relative(study, trial, search_space)
        if self.name in params:
            taken = self._taken(study, trial)
            if _key(params[self.name]) in taken:
                params = {**params, self.name: _cast(self._untaken_near(params[self.name], taken), params[self.name])}
        return params

    def sample_independent(self, study, trial, param_name, param_distribution):
        value = self.base.sample_independent(study, trial, param_name, param_distribution)
        if param_name != self.name:
            return value
        taken = self._taken(study, trial)
        for _ in range(self.RETRIES):
            if _key(value) not in taken:
                return value
            value = self.base.sample_independent(study, trial, param_name, param_distribution)
        return _cast(self._untaken_near(value, taken), value)

    def before_trial(self, study, trial):
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def _key(value) -> float:
    return round(float(value), 9)


def _cast(value, like):
    return int(value) if isinstance(like, int) and not isinstance(like, bool) else float(value)


def _common_step(values: list) -> float | None:
    ordered = sorted(values)
    steps = {round(b - a, 9) for a, b in zip(ordered, ordered[1:])}
    return steps.pop() if len(steps) == 1 else None
