"""The worker loop: join a pipeline, claim a trial, hold its slot's ticket, run it, finish it; repeat.

Whatever the trial computes (a CAS classifier, or a fixed amount of work in tests and the
storage benchmark) is an `objective(trial, stage, config) -> value` handed in by the caller.

Any number of these loops, in any number of processes and machines, can work on one pipeline:
- claims, tickets and finishes are atomic (gafi_opt/slots.py), so every slot is finished by
  exactly one trial and no slot runs twice at once;
- a running trial beats (gafi_opt/heartbeat.py); a worker with nothing to claim sweeps its
  stage: it fails trials that stopped beating and gives every slot left without a trial a new one;
- SIGTERM and SIGINT (Ctrl-C) stop the loop between storage operations: the trial in hand is
  marked FAIL with the reason, its slot re-queued, and `Interrupted` raised (a second signal
  stops at once, leaving the trial to the heartbeat sweep);
- the loop ends when every stage it works on is complete.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from gafi_opt import slots
from gafi_opt.errors import GafiError
from gafi_opt.heartbeat import DEFAULT_GRACE, DEFAULT_INTERVAL, Heartbeat, StaleDetector
from gafi_opt.pipeline import READY_WAIT_S, Pipeline
from gafi_opt.stages import STAGES, TrialConfig, suggest, trial_config
from gafi_opt.storage import configure_heartbeat, in_storage_call, set_leave_hook

log = logging.getLogger(__name__)


class Objective(Protocol):
    def __call__(self, trial: optuna.Trial, stage: str, config: TrialConfig) -> float: ...


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT reached a worker; `exit_status` is the shell's 128 + signal number."""

    def __init__(self, signum: int, trial_note: str = ""):
        self.signum = signum
        self.trial_note = trial_note
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


@dataclass
class WorkerOptions:
    heartbeat_interval: float = DEFAULT_INTERVAL
    grace_period: float = DEFAULT_GRACE
    poll: float = 1.0  # seconds between sweeps while other workers hold the last trials
    ready_wait: float = READY_WAIT_S
    stages: tuple[str, ...] = STAGES


@dataclass
class WorkerStats:
    complete: int = 0
    pruned: int = 0
    failed: int = 0  # errors and NaN results
    cancelled: int = 0  # claimed duplicates that did not run
    lost: int = 0  # finished by another worker first (this one's heartbeat lapsed)
    stale_failed: int = 0  # other workers' trials this one found dead
    requeued: int = 0
    stages: list[str] = field(default_factory=list)


class SignalGuard:
    """Defers SIGTERM/SIGINT to safe points; inside `interruptible()` they raise at once, except in the
    middle of a storage call (a journal lock, a transaction), where they wait for the call to return.
    A second signal raises wherever the worker is."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.pending: int | None = None
        self._open = False
        self._previous: dict = {}

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
            set_leave_hook(self._left_storage)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._previous:
            set_leave_hook(None)

    def _handle(self, signum, _frame) -> None:
        forced = self.pending is not None
        self.pending = self.pending or signum
        if forced or (self._open and not in_storage_call()):
            raise Interrupted(self.pending)

    def _left_storage(self) -> None:
        if self._open and self.pending is not None and threading.current_thread() is threading.main_thread():
            raise Interrupted(self.pending)

    def check(self) -> None:
        if self.pending is not None:
            raise Interrupted(self.pending)

    @contextlib.contextmanager
    def interruptible(self):
        self.check()
        self._open = True
        try:
            yield
        finally:
            self._open = False


class StageLoop:
    def __init__(
        self,
        pipeline: Pipeline,
        objective: Objective,
        options: WorkerOptions | None = None,
        after_trial: Callable[[Pipeline, str], None] | None = None,
    ):
        self.pipeline = pipeline
        self.storage = pipeline.storage
        self.objective = objective
        self.options = options or WorkerOptions()
        self.after_trial = after_trial
        self.stats = WorkerStats()
        self.detector = StaleDetector(self.options.grace_period)
        self.requeuer = slots.Requeuer(self.options.grace_period)
        self.guard = SignalGuard()

    def run(self) -> WorkerStats:
        """Work until every stage in `options.stages` is complete."""
        configure_heartbeat(self.storage, int(math.ceil(self.options.heartbeat_interval)), int(math.ceil(self.options.grace_period)))
        with self.guard:
            while True:
                with self.guard.interruptible():
                    stage = self.pipeline.current_stage(self.options.stages)
                if stage is None:
                    return self.stats
                # Not interruptible: a stage must not be left half-created (a second signal still stops).
                study = self.pipeline.ensure_stage(stage, self.options.ready_wait)
                layout = self.pipeline.layout(study, stage)
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
        failed = self.detector.fail_stale(study, running)
        self.stats.stale_failed += len(failed)
        if failed or any(not v.live and not v.settled for v in views):
            views = slots.views(self.storage, study._study_id, layout["slots"])
        requeued = sum(self.requeuer.requeue(self.storage, study._study_id, v) for v in views)
        self.stats.requeued += requeued
        return requeued > 0

    # ------------------------------------------------------------ one trial

    def _run_claimed(self, study: optuna.Study, stage: str, layout: dict, claimed) -> None:
        trial_id = claimed._trial_id
        name = f"trial {claimed.number} of {study.study_name}"
        with Heartbeat(self.storage, trial_id, self.options.heartbeat_interval):
            refusal = slots.take_ticket(self.storage, study._study_id, claimed, layout["slots"], layout.get("legacy", False))
            if refusal is not None:
                slots.fail(self.storage, trial_id, f"duplicate: {refusal}")
                self.stats.cancelled += 1
                return
            try:
                with self.guard.interruptible():
                    trial = optuna.Trial(study, trial_id)
                    value = suggest(trial, self.pipeline.spec, stage)
                    config = trial_config(stage, value, layout["fixed"], self.pipeline.spec)
                    trial.set_user_attr("config", config.describe())
                    result = self.objective(trial, stage, config)
            except optuna.TrialPruned:
                self._finish(study, trial, name, state=TrialState.PRUNED)
            except Interrupted as exc:
                self._give_back(study, layout, claimed, f"interrupted by {exc.signal_name}")
                exc.trial_note = f"{name} marked failed and re-queued"
                raise
            except BaseException as exc:
                detail = " ".join(str(exc).split())[:300]
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
        if self.after_trial is not None:
            with self.guard.interruptible():
                self.after_trial(self.pipeline, stage)

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
        slot = slots.slot_of(claimed, layout["slots"])
        views = slots.views(self.storage, study._study_id, layout["slots"])
        if slot is not None and self.requeuer.requeue(self.storage, study._study_id, views[slot]):
            self.stats.requeued += 1
