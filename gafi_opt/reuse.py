"""Trials that repeat an earlier one take its result instead of training the same classifier again.

The checkpoint stage trains with stddev 1 and filter threshold 0. So the stddev stage's point
1.0 is the checkpoint stage's best trial once more (same checkpoint, stddev, filter, recycle
period, seed: the same data recipe), and the threshold stage's point 0.0 is the stddev
stage's best. Such a trial replays the earlier one: its val history is reported again (so
pruners, successive halving's rungs included, compare against it; whatever the pruner says of
it is moot, its result is known), its attributes are copied with `reused` naming the source, and it
costs 0 classifier-epochs. Only search stages reuse: the final and baseline stages always
train, so their seeds stay independent of any selection.

A budgeted stage starts with that point (`incumbent_point`): a free observation of a
configuration already known to be good, which its sampler builds on and which the stage
can only improve on.
"""

from __future__ import annotations

import dataclasses

import optuna

from gafi_opt.stages import TrialConfig, grid

SEARCH_STAGES = ("checkpoint", "stddev", "threshold")
# The values the checkpoint stage trains with, for the parameters the later stages search.
CHECKPOINT_STAGE_VALUES = {"stddev": 1.0, "threshold": 0.0}


def incumbent_point(spec, stage: str) -> float | None:
    """The stage's point that repeats the previous stage's best trial, if its grid or range holds it."""
    value = CHECKPOINT_STAGE_VALUES.get(stage)
    if value is None or all(abs(point - value) > 1e-9 for point in grid(spec, stage)):
        return None
    return value


def same_recipe(a: TrialConfig, b: TrialConfig) -> bool:
    """True when two trials train on the same data with the same seed (whatever their stage)."""
    return _recipe(a) == _recipe(b)


def _recipe(config: TrialConfig) -> tuple:
    # Values as the stages store them (1.7 may come back as 1.7000000000000002 from a float step).
    values = dataclasses.astuple(dataclasses.replace(config, stage=""))
    return tuple(round(v, 9) if isinstance(v, float) else v for v in values)


def replay(trial: optuna.Trial, earlier: optuna.trial.FrozenTrial, source: str) -> float:
    """Give `trial` the result of `earlier` (a complete trial with the same recipe); returns its value."""
    for epoch, value in sorted(earlier.intermediate_values.items()):
        trial.report(value, epoch)
        trial.should_prune()  # as the trial did when it ran: successive halving records its rungs here
    for key, value in earlier.user_attrs.items():
        if key != "config":
            trial.set_user_attr(key, value)
    trial.set_user_attr("classifier_epochs", 0)
    trial.set_user_attr("seconds", 0.0)
    trial.set_user_attr("reused", source)
    return float(earlier.value)
