"""The live per-stage line of `run` and `worker`: trials done / total, pruned, failed, best so far.

A `StageProgress` is the worker's reporter (called after each trial with the pipeline and
the stage). It keeps one tqdm bar per stage, so the line updates in place and the finished
stage's line stays on screen. Disabled (silent) when output is not a terminal or on --quiet.
"""

from __future__ import annotations

from optuna.trial import TrialState
from tqdm.auto import tqdm

from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline
from gafi_opt.search.stages import trial_budget

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} trials done{postfix}"  # tqdm puts ", " before the postfix


class StageProgress:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar: tqdm | None = None
        self._stage: str | None = None

    def __call__(self, pipeline, stage: str) -> None:
        if not self.enabled or not isinstance(pipeline, Pipeline):
            return
        study = pipeline.stage_study(stage)
        if study is None:
            return
        counts = {state: 0 for state in TrialState}
        for trial in study.get_trials(deepcopy=False):
            counts[trial.state] += 1
        if stage != self._stage:
            self.close()
            self._stage = stage
            # No rate or elapsed time: the bar starts after the stage's first trial, so both would mislead.
            self._bar = tqdm(
                total=trial_budget(pipeline.spec, stage), desc=f"{pipeline.name}/{stage}", leave=True, bar_format=BAR_FORMAT
            )
        try:
            best = f"best val {pipeline.best_trial(stage).value:.4f}"
        except GafiError:
            best = "no complete trial yet"
        done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        self._bar.n = min(done, self._bar.total)
        self._bar.set_postfix_str(
            f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed, {counts[TrialState.RUNNING]} running, {best}", refresh=False
        )
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
