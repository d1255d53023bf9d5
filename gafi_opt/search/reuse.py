"""Trials that repeat an earlier one take its result instead of training the same classifier again.

The checkpoint stage trains with stddev 1 and filter threshold 0. So the stddev stage's point
1.0 is the checkpoint stage's best trial once more (same checkpoint, stddev, filter, recycle
period, seed: the same data recipe), and the threshold stage's point 0.0 is the stddev
stage's best. A filtered trial also records the thresholds that would have drawn exactly its set
(gafi_opt.synth.SyntheticSource.same_set_thresholds), so a threshold inside them repeats it too: a
confident filter makes thresholds 0.0 to 0.3 one set on digits. Such a trial replays the earlier
one: its val history is reported again (so pruners, successive halving's rungs included, compare
against it; whatever the pruner says of it is moot, its result is known), its attributes are
copied with `reused` naming the source, and it costs 0 classifier-epochs. Only search stages
reuse: the final and baseline stages always train, so their seeds stay independent of any selection.

Budgeted stages are not handed that point for free: its val CAS won the stage before, so it is
biased upwards (the winner's curse) and a budgeted stage's few fresh trials rarely beat it. On
the digits preset a free σ = 1 point kept σ at 1 in 11 of 20 budgeted runs, whose final test
CAS was 1.8-3.3 points below the other runs' (benchmarks/results/search_bench_10_seeds_at_cfc37cf.json).
Proposed by a sampler, the point is reused like any other.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import optuna

from gafi_opt.search.stages import TrialConfig


def same_recipe(a: TrialConfig, b: TrialConfig) -> bool:
    """True when two trials train on the same data with the same seed (whatever their stage)."""
    return _recipe(a) == _recipe(b)


def same_set(earlier: optuna.trial.FrozenTrial, earlier_config: TrialConfig, config: TrialConfig) -> bool:
    """True when the complete trial `earlier` drew exactly the set `config` would: the same recipe but
    for the filter threshold, which lies where every filter decision of `earlier` stays the same."""
    interval = earlier.user_attrs.get("same_set_thresholds")
    if interval is None or earlier_config.threshold is None or config.threshold is None:
        return False
    if not same_recipe(dataclasses.replace(earlier_config, threshold=config.threshold), config):
        return False
    low, high = interval
    return low <= float(np.float32(config.threshold)) < high  # the filter compares in float32


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
