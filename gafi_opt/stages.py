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

from gafi_opt.spec import Spec, StageSpec

STAGES = ("baseline", "checkpoint", "stddev", "threshold", "final")
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


def suggest(trial: optuna.Trial, spec: Spec, stage: str):
    """The searched parameter, through Optuna's API (grid points arrive as enqueued values)."""
    name = SEARCHED[stage]
    values = grid(spec, stage)
    if is_grid(spec, stage):
        return trial.suggest_categorical(name, values)
    step = _common_step(values)
    if stage == "checkpoint":
        return trial.suggest_int(name, min(values), max(values), step=int(step) if step else 1)
    return trial.suggest_float(name, min(values), max(values), step=step)


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
    search = "grid" if is_grid(spec, stage) else spec.stage(stage).search
    if search == "gp":
        return optuna.samplers.GPSampler(seed=spec.seed)
    # Grid stages only ever run enqueued trials; TPE is the budgeted search.
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=max(2, trial_budget(spec, stage) // 4))


def make_pruner(spec: Spec, stage: str) -> optuna.pruners.BasePruner:
    sspec = stage_spec(spec, stage)
    epochs = spec.cas.epochs
    if sspec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=sspec.pruner_startup_trials, n_warmup_steps=sspec.pruner_warmup)
    if sspec.pruner == "percentile":
        return optuna.pruners.PercentilePruner(
            25.0, n_startup_trials=sspec.pruner_startup_trials, n_warmup_steps=sspec.pruner_warmup
        )
    if sspec.pruner == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, epochs // 8), reduction_factor=3)
    if sspec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, epochs // 8), max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _common_step(values: list) -> float | None:
    ordered = sorted(values)
    steps = {round(b - a, 9) for a, b in zip(ordered, ordered[1:])}
    return steps.pop() if len(steps) == 1 else None
