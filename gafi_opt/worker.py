"""A worker: joins a pipeline by name and runs CAS trials of its current stage until it is done.

The distributed part (claims, tickets, heartbeats, stale trials, signals) is the loop of
gafi_opt/distributed.py; this module gives it the CAS objective and the dashboard hooks.
"""

from __future__ import annotations

import logging

import optuna
import torch

from gafi_opt.cas import TrialContext, train_cas
from gafi_opt.dashboard import publish_reused_trial, publish_stage, publish_trial
from gafi_opt.data import load_data
from gafi_opt.distributed import StageLoop, WorkerOptions, WorkerStats
from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline
from gafi_opt.reuse import replay
from gafi_opt.stages import TrialConfig

log = logging.getLogger(__name__)


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
    def __init__(self, pipeline: Pipeline, device: torch.device, progress: bool = True, reporter=None, options: WorkerOptions | None = None):
        self.pipeline = pipeline
        self.spec = pipeline.spec
        self.device = device
        self.progress = progress
        self.reporter = reporter  # called with (pipeline, stage) after each trial
        self.options = options
        self._context: TrialContext | None = None

    @property
    def context(self) -> TrialContext:
        if self._context is None:
            self._context = TrialContext(self.spec, load_data(self.spec.data), self.device)
        return self._context

    def run(self) -> WorkerStats:
        """Run trials until every stage is complete (see gafi_opt/distributed.py)."""
        return StageLoop(self.pipeline, self._objective, self.options, after_trial=self._after_trial).run()

    def _objective(self, trial: optuna.Trial, stage: str, config: TrialConfig) -> float:
        """One CAS trial; the loop tells the result (NaN: failed and re-queued)."""
        earlier = self.pipeline.trial_to_reuse(stage, config, trial.study.user_attrs.get("fixed", {}))
        if earlier is not None:  # the same data and seed as a finished trial: the same result
            value = replay(trial, *earlier)
            publish_reused_trial(self.pipeline, trial.study, trial, config, *earlier)
            return value
        try:
            result = train_cas(self.context, config, trial, progress=self.progress)
        except optuna.TrialPruned as pruned:
            publish_trial(self.pipeline, trial.study, trial, config, getattr(pruned, "result", None), pruned=True)
            raise
        for key, attr in result.user_attrs().items():
            trial.set_user_attr(key, attr)
        publish_trial(self.pipeline, trial.study, trial, config, result)  # dashboard: note and sample grid
        return result.val_acc

    def _after_trial(self, pipeline: Pipeline, stage: str) -> None:
        publish_stage(pipeline, stage)  # dashboard: the stage's key figure
        if self.reporter:
            self.reporter(pipeline, stage)
