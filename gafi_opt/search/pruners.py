"""Pruners of the stages: Optuna's median, percentile, successive-halving and Hyperband pruners over
classifier epochs, which by default wait until the learning rate has first dropped."""

from __future__ import annotations

import optuna

from gafi_opt.search.stages import stage_spec
from gafi_opt.spec import Spec


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
