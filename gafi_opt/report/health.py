"""Warnings about results that look fine in a table but are not what they claim.

A "filtered" synthetic set whose filter accepts almost nothing is mostly unfiltered fallback (bounded
filtering fills the slots it gave up on with fresh unfiltered samples): the stage then compares
unfiltered sets while the table says "threshold 0.3". It happens when the generator ignores its labels
(its samples of class c do not look like c to a classifier trained on real data). `run`, `status`,
`export` and the dashboard each say so in one line per stage.
"""

from __future__ import annotations

import statistics

from optuna.trial import TrialState

from gafi_opt.search.stages import STAGES

MOSTLY_FALLBACK = 0.5  # a stage whose filtered sets were on average more than half fallback
LOW_ACCEPTANCE = 0.05  # a stage whose filter accepted under 5% of the generated samples


def stage_warnings(pipeline) -> list[str]:
    """One line per stage whose filtered synthetic sets were mostly fallback or barely accepted."""
    lines = []
    for stage in STAGES:
        trials = [
            t
            for t in pipeline.finished_trials(stage)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "filter threshold off" not in t.user_attrs.get("config", "")
        ]
        fallback = [t.user_attrs["fallback_fraction"] for t in trials if "fallback_fraction" in t.user_attrs]
        accepted = [t.user_attrs["acceptance_rate"] for t in trials if "acceptance_rate" in t.user_attrs]
        if not fallback or not accepted:
            continue
        mean_fallback, mean_accepted = statistics.fmean(fallback), statistics.fmean(accepted)
        if mean_fallback > MOSTLY_FALLBACK or mean_accepted < LOW_ACCEPTANCE:
            lines.append(
                f"warning: pipeline {pipeline.name}, stage {stage}: the filter accepted {100 * mean_accepted:.1f}% of the generated "
                f"samples and {100 * mean_fallback:.0f}% of the synthetic sets were unfiltered fallback, so its 'filtered' results are "
                "mostly unfiltered (does the generator ignore its labels? see README, 'Bad input')"
            )
    return lines
