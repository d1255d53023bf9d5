"""Exactly-once trials: a stage's work as slots, each finished by exactly one trial, whatever workers do.

A stage has a fixed list of slots: one per grid point (the grid value fixed through Optuna's
`fixed_params`, as `enqueue_trial` does) or, for a budgeted TPE/GP search, one per trial of
the budget (parameters left to the sampler). Trials carry their slot in a system attr.

Three atomic steps, each decided once by the storage, make the stage exact:

1. claim: a worker moves a WAITING trial to RUNNING with Optuna's `set_trial_state_values`,
   which answers False to all but one claimant (row lock on PostgreSQL, BEGIN IMMEDIATE on
   SQLite - see _rdb.py -, log order in the journal);
2. ticket: before running, the claimed trial takes the slot's next ticket, a study system attr
   `ticket:<slot>:<k>` written with test-and-set (insert-if-absent). Ticket k+1 may be taken only
   once the holder of ticket k has FAILED, so a slot's trials run one after another and never
   both: a duplicate (a second waiting trial of the slot) finds the slot held or done and is
   cancelled at once, without running;
3. finish: a trial is told COMPLETE or PRUNED only while RUNNING; Optuna refuses to finish a
   trial twice, so a stale-failed trial that comes back late cannot also complete.

Enqueuing is therefore always safe, even twice: a slot that has no live trial and no finished
one gets a new waiting trial from whichever worker notices (after a crash, an interruption, a
stage creator that died half-way), and the tickets throw away any duplicate. Deciding nothing
from trial lists alone also keeps a stale cached list from ever causing a double run.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState, create_trial

from gafi_opt.storages.atomic import TAS_PREFIX, TrialInfo, set_once, trial_info, trial_infos, waiting_trial_ids
from gafi_opt.storages.heartbeat import HEARTBEAT

log = logging.getLogger(__name__)

SLOT = "gafi:slot"  # trial system attr: the slot index
REASON = "gafi:fail_reason"  # trial system attr, written before a worker fails its own trial
WORKER = "gafi:worker"  # trial system attr: host and pid of the claimant
LAYOUT = TAS_PREFIX + "layout"  # stage study: {"slots": [params...], "fixed": {...}}, first writer wins
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
INFO_KEYS = (SLOT, REASON, HEARTBEAT)  # the system attrs slot bookkeeping reads
LIVE = (TrialState.WAITING, TrialState.RUNNING)
MAX_ERRORS = 3  # trials of one slot that may fail with an error (or NaN) before the slot is given up
COUNTED_REASONS = ("error", "nan")  # interruptions and lost workers do not count against a slot


@dataclass
class SlotView:
    """What the storage says about one slot."""

    slot: int
    params: dict
    done: TrialInfo | None = None  # its COMPLETE/PRUNED trial
    live: list[TrialInfo] = field(default_factory=list)  # WAITING or RUNNING trials
    trials: int = 0  # every trial of the slot, failed ones included
    errors: int = 0  # ticket holders that failed with an error or NaN

    @property
    def exhausted(self) -> bool:
        return self.done is None and self.errors >= MAX_ERRORS

    @property
    def settled(self) -> bool:
        """Nothing more will run here: finished, or given up after repeated errors."""
        return self.done is not None or self.exhausted


def ticket_key(slot: int, index: int) -> str:
    return f"{TAS_PREFIX}ticket:{slot}:{index}"


def tickets(attrs: dict, slot: int) -> list[int]:
    """Holder trial ids of the slot's tickets, in order."""
    holders = []
    while (key := ticket_key(slot, len(holders))) in attrs:
        holders.append(attrs[key])
    return holders


def layout(storage: BaseStorage, study_id: int, proposal: dict | None = None) -> dict | None:
    """The stage's slots and fixed values; `proposal` is stored unless a layout exists already."""
    attrs = storage.get_study_system_attrs(study_id)
    if LAYOUT not in attrs and proposal is not None:
        set_once(storage, study_id, LAYOUT, json.dumps(proposal, sort_keys=True))
        attrs = storage.get_study_system_attrs(study_id)
    return json.loads(attrs[LAYOUT]) if LAYOUT in attrs else None


def slot_of(trial: FrozenTrial | TrialInfo) -> int:
    """The slot a trial was enqueued for."""
    return int(trial.system_attrs[SLOT])


def enqueue(storage: BaseStorage, study_id: int, slot: int, params: dict) -> int:
    """A new WAITING trial for the slot, created with its attrs in one storage write."""
    template = create_trial(state=TrialState.WAITING, system_attrs={"fixed_params": params, SLOT: slot})
    return storage.create_new_trial(study_id, template_trial=template)


def claim(storage: BaseStorage, study_id: int) -> TrialInfo | None:
    """Move one WAITING trial to RUNNING; None when there is none left to take."""
    waiting = waiting_trial_ids(storage, study_id)
    if not waiting:
        return None
    # The first waiting trial first, as Optuna pops them: a worker alone runs a stage in the same
    # order every time, so pruning decisions (and the stage's choice) are reproducible. Once that
    # race is lost to another worker, go on from a random place: fewer lost races.
    first, rest = waiting[0], waiting[1:]
    start = random.randrange(len(rest)) if rest else 0
    for trial_id in [first, *rest[start:], *rest[:start]]:
        try:
            if storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return trial_info(storage, trial_id, INFO_KEYS)
        except UpdateFinishedTrialError:
            continue  # cancelled meanwhile
    return None


def take_ticket(storage: BaseStorage, study_id: int, trial: TrialInfo) -> str | None:
    """Let the claimed `trial` run its slot: None when it may, else why it must not."""
    if SLOT not in trial.system_attrs:
        return "it belongs to no slot of this stage"
    slot = slot_of(trial)
    while True:
        attrs = storage.get_study_system_attrs(study_id)
        holders = tickets(attrs, slot)
        errors = 0
        for holder_id in holders:
            holder = trial_info(storage, holder_id, INFO_KEYS)
            if holder.state in FINISHED:
                return f"slot {slot} is already finished by trial {holder.number}"
            if holder.state in LIVE:
                return f"slot {slot} is held by trial {holder.number}"
            errors += str(holder.system_attrs.get(REASON, "")).startswith(COUNTED_REASONS)
        if errors >= MAX_ERRORS:
            return f"slot {slot} failed {errors} times and is given up"
        if set_once(storage, study_id, ticket_key(slot, len(holders)), trial._trial_id):
            return None
        # another trial took this ticket first: look again (it is now live, or already failed)


def fail(storage: BaseStorage, trial_id: int, reason: str) -> bool:
    """Mark a trial FAIL with a reason; False when it had already finished (nothing changed)."""
    try:
        storage.set_trial_system_attr(trial_id, REASON, reason[:500])
        return bool(storage.set_trial_state_values(trial_id, TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


def views(storage: BaseStorage, study_id: int, slots: list[dict]) -> list[SlotView]:
    """Each slot's state; tickets (not the trial list) decide which trial finished it."""
    result = [SlotView(i, params) for i, params in enumerate(slots)]
    attrs = storage.get_study_system_attrs(study_id)
    trials = {t.trial_id: t for t in trial_infos(storage, study_id, INFO_KEYS)}
    for trial in trials.values():
        slot = trial.system_attrs.get(SLOT)
        if slot is None or slot >= len(slots):
            continue  # a slot beyond this caller's layout (multigen asked for fewer seeds this time)
        view = result[slot]
        view.trials += 1
        if trial.state in LIVE:
            view.live.append(trial)
    for view in result:
        for holder_id in tickets(attrs, view.slot):
            holder = trials.get(holder_id) or trial_info(storage, holder_id, INFO_KEYS)  # committed after the list
            if holder.state in FINISHED:
                view.done = holder
            elif holder.state == TrialState.FAIL:
                view.errors += str(holder.system_attrs.get(REASON, "")).startswith(COUNTED_REASONS)
    return result


class Requeuer:
    """Gives each slot with no live and no finished trial one new waiting trial.

    A test-and-set marker per (slot, number of trials it has had) lets one worker of many do
    it; should that worker die between marker and enqueue, the slot is enqueued anyway once
    it has looked lost for `grace` seconds of this process's own clock.
    """

    def __init__(self, grace: float):
        self.grace = grace
        self._lost_since: dict[tuple[int, int], float] = {}

    def requeue(self, storage: BaseStorage, study_id: int, view: SlotView) -> bool:
        if view.settled or view.live:
            return False
        key = (view.slot, view.trials)
        marker = f"{TAS_PREFIX}requeue:{view.slot}:{view.trials}"
        if set_once(storage, study_id, marker, uuid.uuid4().hex):
            enqueue(storage, study_id, view.slot, view.params)
            return True
        first = self._lost_since.setdefault(key, time.monotonic())
        if time.monotonic() - first > self.grace:
            log.warning("slot %d still has no trial after %.0f s: enqueuing it again", view.slot, self.grace)
            self._lost_since.pop(key)
            enqueue(storage, study_id, view.slot, view.params)
            return True
        return False


def cancel_leftovers(storage: BaseStorage, slot_views: list[SlotView]) -> int:
    """Cancel waiting trials of settled slots (left over by duplicate enqueues): claim, then fail them."""
    cancelled = 0
    for view in slot_views:
        for trial in view.live if view.settled else ():
            if trial.state != TrialState.WAITING:
                continue
            try:
                if storage.set_trial_state_values(trial.trial_id, TrialState.RUNNING):
                    cancelled += fail(storage, trial.trial_id, "duplicate: its slot was already settled")
            except UpdateFinishedTrialError:
                pass
    return cancelled
