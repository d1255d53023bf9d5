"""Samplers of the search stages: grid stages run only enqueued trials; budgeted stages sample with
Optuna's TPE or GP sampler, wrapped so that no grid point is evaluated twice."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from gafi_opt.search.stages import SEARCHED, grid, is_grid, trial_budget
from gafi_opt.spec import Spec


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
