"""The one worker loop: claim a trial, hold its slot's ticket, beat, run it, finish it or give it back; repeat.

Every kind of trial runs here: the stages of a pipeline, a multi-generator study, and the fixed-work
trials of the tests and the storage benchmark. What a trial computes is an `objective(trial, stage,
config) -> value` handed in by the caller; what work there is comes from a `Plan` (a pipeline, or a
multigen study): its stages in order, each an Optuna study whose layout lists the slots.

Any number of these loops, in any number of processes and machines, can work on one plan:
- claims, tickets and finishes are atomic (gafi_opt.storages.slots), so every slot is finished by
  exactly one trial and no slot runs twice at once;
- a running trial beats (gafi_opt.storages.heartbeat); a worker with nothing to claim sweeps its
  stage: it fails trials that stopped beating (saying so) and gives every slot left without a trial a new one;
- SIGTERM and SIGINT (Ctrl-C) stop the loop between storage operations: the trial in hand is
  marked FAIL with the reason, its slot re-queued, and `Interrupted` raised (a second signal
  stops at once, leaving the trial to the heartbeat sweep);
- an unreachable database is waited for (`storage_outage` seconds), keeping the trial in hand and its
  result; a storage lost for good (unreachable for longer, or its file deleted or replaced) stops the
  loop at once with `StorageLost`, leaving the trial RUNNING for the heartbeat sweep of the next worker;
- the loop ends when every stage it works on is complete.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from gafi_opt.errors import GafiError, StorageLost, one_line
from gafi_opt.pipeline.signals import Interrupted, SignalGuard
from gafi_opt.search.stages import TrialConfig
from gafi_opt.storages import heartbeat, slots
from gafi_opt.storages.heartbeat import DEFAULT_GRACE, DEFAULT_INTERVAL, Heartbeat, StaleDetector
from gafi_opt.storages.outage import DEFAULT_OUTAGE_S, set_outage_limit

READY_WAIT_S = 60.0  # how long a stage may stay half-created before other workers complete it

log = logging.getLogger(__name__)


class Plan(Protocol):
    """The work a loop does: stages in order, each an Optuna study whose layout lists its slots."""

    name: str
    storage: BaseStorage
    stages: tuple[str, ...]

    def current_stage(self, stages: tuple[str, ...]) -> str | None: ...
    def ensure_stage(self, stage: str, ready_wait: float) -> optuna.Study: ...
    def layout(self, study: optuna.Study, stage: str) -> dict: ...
    def trial_config(self, trial: optuna.Trial, stage: str, layout: dict) -> TrialConfig: ...
    def describe(self, config: TrialConfig) -> str: ...


class Objective(Protocol):
    def __call__(self, trial: optuna.Trial, stage: str, config: TrialConfig) -> float: ...


class TrialHooks:
    """What a loop tells the world besides the storage (the dashboard, a progress line); no-ops here."""

    def trial_trained(self, plan: Plan, study: optuna.Study, trial: optuna.Trial, config: TrialConfig, result, pruned: bool) -> None:
        """Training ended (the trial is not told yet, so it can still take artifacts)."""

    def trial_reused(self, plan: Plan, study: optuna.Study, trial: optuna.Trial, config: TrialConfig, source, source_name: str) -> None:
        """The trial took an earlier trial's result instead of training."""

    def trial_finished(self, plan: Plan, stage: str) -> None:
        """A trial of `stage` was told (complete, pruned or failed)."""


@dataclass
class WorkerOptions:
    heartbeat_interval: float = DEFAULT_INTERVAL
    grace_period: float = DEFAULT_GRACE
    poll: float = 1.0  # seconds between sweeps while other workers hold the last trials
    ready_wait: float = READY_WAIT_S
    stages: tuple[str, ...] | None = None  # None: every stage of the plan
    storage_outage: float = DEFAULT_OUTAGE_S  # seconds to wait for an unreachable database


@dataclass
class WorkerStats:
    complete: int = 0
    pruned: int = 0
    failed: int = 0  # errors and NaN results
    cancelled: int = 0  # claimed duplicates that did not run
    lost: int = 0  # finished by another worker first (this one's heartbeat lapsed)
    stale_failed: int = 0  # other workers' trials this one found dead (and re-queued)
    requeued: int = 0
    stages: list[str] = field(default_factory=list)


class StageLoop:
    def __init__(self, plan: Plan, objective: Objective, options: WorkerOptions | None = None, hooks: TrialHooks | None = None):
        self.plan = plan
        self.storage = plan.storage
        self.objective = objective
        self.options = options or WorkerOptions()
        self.hooks = hooks or TrialHooks()
        self.stats = WorkerStats()
        self.detector = StaleDetector(self.options.grace_period)
        self.requeuer = slots.Requeuer(self.options.grace_period)
        self.guard = SignalGuard()

    def run(self) -> WorkerStats:
        """Work until every stage in `options.stages` (default: the plan's) is complete."""
        stages = self.options.stages or self.plan.stages
        heartbeat.configure(self.storage, self.options.heartbeat_interval, self.options.grace_period)
        set_outage_limit(self.storage, self.options.storage_outage)
        with self.guard:
            while True:
                with self.guard.interruptible():
                    stage = self.plan.current_stage(stages)
                if stage is None:
                    return self.stats
                # Not interruptible: a stage must not be left half-created (a second signal still stops).
                study = self.plan.ensure_stage(stage, self.options.ready_wait)
                layout = self.plan.layout(study, stage)
                if stage not in self.stats.stages:
                    self.stats.stages.append(stage)
                self._work_stage(study, stage, layout)

    # ------------------------------------------------------------ one stage

    def _work_stage(self, study: optuna.Study, stage: str, layout: dict) -> None:
        study_id = study._study_id
        while True:
            self.guard.check()
            claimed = slots.claim(self.storage, study_id)  # not interruptible: a claim is never left unowned
            if claimed is not None:
                self._run_claimed(study, stage, layout, claimed)
                continue
            with self.guard.interruptible():
                views = slots.views(self.storage, study_id, layout["slots"])
                if all(v.settled for v in views):
                    slots.cancel_leftovers(self.storage, views)
                    return
                if self._sweep(study, layout, views):
                    continue  # something was re-queued: claim it
                time.sleep(self.options.poll)

    def _sweep(self, study: optuna.Study, layout: dict, views: list[slots.SlotView]) -> bool:
        """Fail trials whose worker is gone; give each slot left without a trial a new one."""
        running = [t for v in views for t in v.live if t.state == TrialState.RUNNING]
        stale = self.detector.stale(study, running)
        for trial in stale:
            beat = trial.system_attrs.get(heartbeat.HEARTBEAT) or {}
            where = f" on {beat['host']} (pid {beat['pid']})" if "host" in beat else ""
            reason = f"lost worker: its worker{where} stopped beating for more than {self.detector.grace_for(trial):.0f} s"
            if slots.fail(self.storage, trial._trial_id, reason):
                self.stats.stale_failed += 1
                log.warning("trial %d of %s: %s; marked failed and re-queued", trial.number, study.study_name, reason)
        if stale or any(not v.live and not v.settled for v in views):
            views = slots.views(self.storage, study._study_id, layout["slots"])
        requeued = sum(self.requeuer.requeue(self.storage, study._study_id, v) for v in views)
        self.stats.requeued += requeued
        return requeued > 0

    # ------------------------------------------------------------ one trial

    def _run_claimed(self, study: optuna.Study, stage: str, layout: dict, claimed) -> None:
        trial_id = claimed._trial_id
        name = f"trial {claimed.number} of {study.study_name}"
        with Heartbeat(self.storage, trial_id, self.options.heartbeat_interval):
            refusal = slots.take_ticket(self.storage, study._study_id, claimed)
            if refusal is not None:
                slots.fail(self.storage, trial_id, f"duplicate: {refusal}")
                self.stats.cancelled += 1
                return
            try:
                with self.guard.interruptible():
                    trial = optuna.Trial(study, trial_id)
                    config = self.plan.trial_config(trial, stage, layout)
                    trial.set_user_attr("config", self.plan.describe(config))
                    result = self.objective(trial, stage, config)
            except optuna.TrialPruned:
                self._finish(study, trial, name, state=TrialState.PRUNED)
            except Interrupted as exc:
                self._give_back(study, layout, claimed, f"interrupted by {exc.signal_name}")
                exc.trial_note = f"{name} marked failed and re-queued"
                raise
            except StorageLost:
                raise  # nothing can be written: the trial stays RUNNING, and the next worker's sweep re-queues it
            except BaseException as exc:
                detail = one_line(exc)
                # A user's problem (a missing file, a bad checkpoint) is fixed and run again: it does not
                # count against the slot; anything else does (three strikes, then the slot is given up).
                kind = "input error" if isinstance(exc, GafiError) else "error"
                self._give_back(study, layout, claimed, f"{kind}: {type(exc).__name__}: {detail}")
                self.stats.failed += 1
                raise
            else:
                if result is None or math.isnan(result):
                    self._give_back(study, layout, claimed, "nan: the objective returned no number")
                    self.stats.failed += 1
                else:
                    self._finish(study, trial, name, value=float(result))
        with self.guard.interruptible():
            self.hooks.trial_finished(self.plan, stage)

    def _finish(self, study: optuna.Study, trial: optuna.Trial, name: str, value=None, state=None) -> None:
        try:
            if state is None:
                study.tell(trial, value)
                self.stats.complete += 1
            else:
                study.tell(trial, state=state)
                self.stats.pruned += 1
        except (ValueError, UpdateFinishedTrialError):
            # Failed as stale by another worker while this one still ran (its heartbeat did not
            # get through): that worker re-queued the slot, so this result is dropped.
            self.stats.lost += 1
            log.warning("%s was finished by another worker (heartbeat lost?); its result is dropped", name)

    def _give_back(self, study: optuna.Study, layout: dict, claimed, reason: str) -> None:
        """FAIL the trial with `reason` and give its slot a new waiting trial (unless given up)."""
        if not slots.fail(self.storage, claimed._trial_id, reason):
            return  # already failed by a sweeper, which re-queues it
        slot = slots.slot_of(claimed)
        views = slots.views(self.storage, study._study_id, layout["slots"])
        if slot < len(views) and self.requeuer.requeue(self.storage, study._study_id, views[slot]):
            self.stats.requeued += 1
