"""Choosing a stage's value from noisy scores: the paper's argmax, or a rule that resists luck.

A search trial's val CAS is one draw: one classifier seed, one synthetic draw, a val split of a few
hundred images on small data. The largest of a dozen such draws is mostly luck (the winner's curse).
The rules form a ladder, each adding one remedy to the one before, so each remedy can be measured:

- `argmax` (the paper's protocol): every point once, the best last-epoch val wins; a point that repeats
  the previous stage's winner reuses that trial's score (gafi_opt.search.reuse), lucky as it was.
- `fresh`: each search stage trains its points with a seed of its own, so the previous stage's winner
  is evaluated afresh and competes on equal terms (gafi_opt.search.stages.search_seed).
- `late`: fresh, and a trial's score is its val accuracy averaged over the epochs after
  the last learning-rate drop (free: those epochs are trained anyway).
- `robust`: late, and the choice is the maximum of a smoothed estimate over the ordered grid (a Gaussian
  process with a noise term, scikit-learn's GaussianProcessRegressor), among the points that were
  trained to the end. Measured, it chose no better than `late` on digits: its prior pulls the grid's
  ends towards the middle, where GaFi's optima often lie at an end (the last checkpoints, σ near 2).
- `trend` (the default): robust with a local line (LOESS) for the smoothed estimate, which follows a trend
  to the grid's ends. Measured over 40 paired digits pipelines on two CPU models, it closed 6 points more
  of the gap than `late` on average, ahead in each of the four runs (README, "Choosing under noise").
- `soft`: trend, and a trial's score is its soft val accuracy (the mean probability the classifier gives
  each val image's true class, the `val_soft_history` attribute) averaged over the late epochs. On a val
  split of a few hundred images accuracy moves in steps of one image; the soft accuracy sees how sure the
  classifier is on every image, so two points that classify the same images apart by luck score apart by
  less, and two that differ in how well they learned show it before a single prediction flips. Measured
  against `trend` in four digits configurations on one machine it closed 3.9 ± 2.6 points more of the gap,
  ahead in three, behind in one (README): not yet the bar `trend` cleared, so not the default.

A stage's choice is computed once, when the stage is complete, and frozen in the storage
(Pipeline.choice), so every worker, export and figure sees the same value on any machine.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from gafi_opt.spec import RULES

MIN_POINTS_TO_SMOOTH = 3  # fewer distinct values: the per-value mean decides
LATE_RULES = ("late", "robust", "trend", "soft")  # score: val averaged over the epochs after the last lr drop
SMOOTHING_RULES = ("robust", "trend", "soft")  # choice: the maximum of the smoothed estimate
LOCAL_LINE_RULES = ("trend", "soft")  # smoothed by local_trend; robust by a Gaussian process
TREND_REACH_STEPS = 3  # the local line at a grid value weighs the observations within 3 grid steps


@dataclass(frozen=True)
class Observation:
    """A finished trial as a rule sees it: its value of the searched parameter and its score."""

    value: float | str  # a sampler stage's values are names
    score: float  # the rule's score; for a pruned trial, the val at the cut (shown, never chosen)
    trial: int  # trial number
    pruned: bool = False
    spread: float = 0.0  # late rules: the sd of the per-epoch val scores the score averages


@dataclass
class Choice:
    """What a rule chose, and what it saw: the raw scores and its estimate of each point."""

    rule: str
    value: float | int
    trial: int  # the complete trial standing for the chosen value (its best score there)
    score: float  # the rule's estimate at the chosen value
    observations: list[Observation] = field(default_factory=list)
    estimate: list[dict] = field(default_factory=list)  # per grid value: {"value", "mean", "sd"} (robust)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> "Choice":
        return cls(**{**raw, "observations": [Observation(**o) for o in raw.get("observations", [])]})


def late_epochs(epochs: int, lr_milestones: tuple[float, ...]) -> int:
    """How many final epochs a robust score averages: those after the last learning-rate drop."""
    drops = sorted(max(1, round(m * epochs)) for m in lr_milestones)
    after = epochs - drops[-1] if drops else max(1, epochs // 5)
    return max(1, min(epochs, after))


def scored_history(trial: FrozenTrial, rule: str) -> list[float]:
    """The per-epoch val scores a late rule averages: soft accuracy for `soft`, accuracy otherwise."""
    return trial.user_attrs.get("val_soft_history" if rule == "soft" else "val_history") or []


def trial_score(trial: FrozenTrial, rule: str, key: str, late: int) -> float | None:
    """A finished trial's score under `rule`: `key` ("val_acc" or "test_acc") at the last epoch, or (late
    rules) its val history averaged over the last `late` epochs (test has no history, so it stays as it is).
    A pruned trial's score is its val accuracy at the cut, whatever the rule: that is what the pruner saw."""
    attrs = trial.user_attrs
    if trial.state == TrialState.PRUNED:
        values = trial.intermediate_values
        return values[max(values)] if values else None
    history = scored_history(trial, rule) if rule in LATE_RULES and key == "val_acc" else []
    if history:
        return statistics.fmean(history[-late:])
    if rule == "soft" and key == "val_acc":
        return None  # a trial without soft scores (trained by an older version) cannot be compared with those that have them
    value = attrs.get(key, trial.value)
    return None if value is None else float(value)


def observations(trials: list[FrozenTrial], param: str, rule: str, key: str, late: int) -> list[Observation]:
    found = []
    for trial in sorted(trials, key=lambda t: t.number):
        score = trial_score(trial, rule, key, late)
        if score is not None and param in trial.params and math.isfinite(score):
            pruned = trial.state == TrialState.PRUNED
            averaged = scored_history(trial, rule)[-late:] if rule in LATE_RULES and key == "val_acc" and not pruned else []
            spread = statistics.pstdev(averaged) if len(averaged) > 1 else 0.0
            found.append(Observation(trial.params[param], score, trial.number, pruned, spread))
    return found


def choose(rule: str, trials: list[FrozenTrial], param: str, grid: list, key: str = "val_acc", late: int = 1) -> Choice | None:
    """The rule's choice among the finished `trials` of a stage (None while none is complete)."""
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r} (known: {', '.join(RULES)})")
    seen = observations(trials, param, rule, key, late)
    complete = [o for o in seen if not o.pruned]
    if not complete:
        return None
    ordered = not any(isinstance(o.value, str) for o in complete)  # a sampler's names have no order to smooth over
    if rule not in SMOOTHING_RULES or not ordered:
        best = max(complete, key=lambda o: (o.score, -o.trial))
        return Choice(rule, best.value, best.trial, best.score, seen)
    estimate = (local_trend if rule in LOCAL_LINE_RULES else smoothed)(complete, grid)
    by_value = {_key(e["value"]): e["mean"] for e in estimate}
    candidates = sorted({_key(o.value) for o in complete})
    chosen = max(candidates, key=lambda v: (round(by_value[v], 12), -v))  # ties: the smaller value
    at_chosen = [o for o in complete if _key(o.value) == chosen]
    standing = max(at_chosen, key=lambda o: (o.score, -o.trial))
    return Choice(rule, standing.value, standing.trial, by_value[chosen], seen, estimate)


def smoothed(complete: list[Observation], grid: list) -> list[dict]:
    """Mean and sd of the score at every grid value (and every observed value off the grid).

    A Gaussian process over the grid scaled to [0, 1]: an RBF kernel whose length scale may not fall
    below 1.5 grid steps (so one lucky point cannot make a peak of its own) plus a white-noise term
    fitted to the scores. With fewer than three distinct values it is the per-value mean.
    """
    values = sorted({_key(v) for v in [*grid, *(o.value for o in complete)]})
    distinct = sorted({_key(o.value) for o in complete})
    if len(distinct) < MIN_POINTS_TO_SMOOTH:
        return _per_value_means(complete, distinct)
    # scikit-learn loads here, not with the module: `gafi-opt status` and export read frozen choices.
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = min(b - a for a, b in zip(values, values[1:])) / span if len(values) > 1 else 1.0
    x = np.array([[(_key(o.value) - low) / span] for o in complete])
    y = np.array([o.score for o in complete])
    centre, scale = float(y.mean()), float(y.std()) or 1e-3
    kernel = ConstantKernel(1.0, (1e-3, 1e2)) * RBF(length_scale=max(0.3, 1.5 * step), length_scale_bounds=(1.5 * step, 10.0)) + WhiteKernel(
        0.5, (1e-3, 1e1)
    )
    gp = GaussianProcessRegressor(kernel=kernel, normalize_y=False, n_restarts_optimizer=4, random_state=0)
    with warnings.catch_warnings():  # bounds reached on tiny data are expected, not news
        warnings.simplefilter("ignore")
        gp.fit(x, (y - centre) / scale)
    grid_x = np.array([[(v - low) / span] for v in values])
    mean, sd = gp.predict(grid_x, return_std=True)
    return [{"value": v, "mean": float(centre + scale * m), "sd": float(scale * s)} for v, m, s in zip(values, mean, sd)]


def local_trend(complete: list[Observation], grid: list) -> list[dict]:
    """Mean and sd of the score at every grid value, from a local line (LOESS of degree one).

    At each value, a straight line is fitted by weighted least squares to the observations within
    TREND_REACH_STEPS grid steps (tricube weights on the distance; farther where fewer than three distinct
    values lie that close), and its height there is the estimate. Unlike a
    Gaussian process with a constant prior, a local line follows a trend to the grid's ends, where
    GaFi's optima often lie. The sd is the line's standard error, from the residuals of every fit.
    """
    values = sorted({_key(v) for v in [*grid, *(o.value for o in complete)]})
    distinct = sorted({_key(o.value) for o in complete})
    if len(distinct) < MIN_POINTS_TO_SMOOTH:
        return _per_value_means(complete, distinct)
    x = np.array([_key(o.value) for o in complete])
    y = np.array([o.score for o in complete])
    span = (values[-1] - values[0]) or 1.0
    x, targets, observed = (x - values[0]) / span, (np.array(values) - values[0]) / span, (np.array(distinct) - values[0]) / span
    step = min(b - a for a, b in zip(targets, targets[1:]))
    rows = []
    for target in targets:
        distance = np.abs(x - target)
        third_nearest = np.sort(np.abs(observed - target))[2]
        reach = max(TREND_REACH_STEPS * step, third_nearest) * 1.001  # the farthest point kept keeps a little weight
        weight = np.clip(1 - (distance / reach) ** 3, 0, None) ** 3
        design = np.column_stack([np.ones_like(x), x - target])
        # the estimate is a weighted combination of the scores: its row, for the mean and its standard error
        row = np.linalg.pinv(design.T @ (weight[:, None] * design)) @ (design.T * weight)
        rows.append(row[0])
    fitted = np.array([rows[values.index(_key(o.value))] @ y for o in complete])
    noise = float(np.sqrt(np.sum((y - fitted) ** 2) / max(1, len(y) - 2)))
    return [{"value": v, "mean": float(row @ y), "sd": noise * float(np.linalg.norm(row))} for v, row in zip(values, rows)]


def _per_value_means(complete: list[Observation], distinct: list[float]) -> list[dict]:
    means = {v: statistics.fmean(o.score for o in complete if _key(o.value) == v) for v in distinct}
    return [{"value": v, "mean": means[v], "sd": 0.0} for v in distinct]


def _key(value) -> float:
    return round(float(value), 9)
