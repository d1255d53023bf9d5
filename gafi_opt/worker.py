"""A worker: joins a pipeline by name and runs trials of its current stage until it is done."""

from __future__ import annotations

import logging
import math
import time

import optuna
import torch
from optuna.trial import TrialState

from gafi_opt.cas import TrialContext, train_cas
from gafi_opt.data import load_data
from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline
from gafi_opt.stages import SEARCHED, is_grid, suggest, trial_budget, trial_config

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GafiError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GafiError(f"device {name!r} asked for, but no CUDA device is available")
    return device


class Worker:
    def __init__(self, pipeline: Pipeline, device: torch.device, progress: bool = True, reporter=None):
        self.pipeline = pipeline
        self.spec = pipeline.spec
        self.device = device
        self.progress = progress
        self.reporter = reporter  # called with (pipeline, stage) after each trial
        self._context: TrialContext | None = None

    @property
    def context(self) -> TrialContext:
        if self._context is None:
            self._context = TrialContext(self.spec, load_data(self.spec.data), self.device)
        return self._context

    def run(self) -> None:
        """Run trials until every stage is complete."""
        while (stage := self.pipeline.current_stage()) is not None:
            study = self.pipeline.wait_until_ready(stage)
            trial = self._claim(study, stage)
            if trial is None:
                time.sleep(POLL_SECONDS)  # other workers hold the last trials of this stage
                continue
            self._run_trial(study, stage, trial)
            if self.reporter:
                self.reporter(self.pipeline, stage)

    def _claim(self, study: optuna.Study, stage: str) -> optuna.Trial | None:
        """The next trial to run: an enqueued grid point, or a new sample within the budget."""
        trials = study.get_trials(deepcopy=False)
        if is_grid(self.spec, stage):
            if not any(t.state == TrialState.WAITING for t in trials):
                self._requeue_lost_points(study, stage, trials)
                return None
            return study.ask()
        live = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)]
        if len(live) >= trial_budget(self.spec, stage):
            return None
        return study.ask()

    def _requeue_lost_points(self, study: optuna.Study, stage: str, trials) -> None:
        """Grid points whose trials failed (and nothing else holds) go back in the queue."""
        if any(t.state == TrialState.RUNNING for t in trials):
            return
        for value in self.pipeline.missing_points(stage):
            study.enqueue_trial({SEARCHED[stage]: value})

    def _run_trial(self, study: optuna.Study, stage: str, trial: optuna.Trial) -> None:
        value = suggest(trial, self.spec, stage)
        config = trial_config(stage, value, study.user_attrs["fixed"], self.spec)
        trial.set_user_attr("config", config.describe())
        try:
            result = train_cas(self.context, config, trial, progress=self.progress)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            return
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        for key, attr in result.user_attrs().items():
            trial.set_user_attr(key, attr)
        if math.isnan(result.val_acc):
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, result.val_acc)
