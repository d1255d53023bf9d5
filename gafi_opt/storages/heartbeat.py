"""Heartbeats of running trials, and the detection of trials whose worker is gone.

A worker's heartbeat thread refreshes, every `interval` seconds, a system attr of its running
trial (a counter, the interval and the time) on every storage, and on RDB storages also Optuna's
own heartbeat table (`RDBStorage.record_heartbeat`, stamped with the database's clock).

A trial is stale when:
- on RDB storages, Optuna's heartbeat table (`_get_stale_trial_ids`) has it older than the grace
  period (database clock, so it works the moment a worker starts watching); and, everywhere,
- its heartbeat attr has not changed for the grace period as timed by the watching process's
  own monotonic clock. This needs no clock agreement between machines (journal on NFS, gRPC),
  and it also catches a worker killed between claiming a trial and its first heartbeat.

The grace period applied to a trial is never shorter than three of the intervals its own
worker announced, so a worker configured with a slower heartbeat is not failed by a stricter one.

An outage of the storage is counted against no one: while the database is unreachable no
heartbeat gets through, and the worker keeps its trial until the database is back
(gafi_opt.storages.outage). So a watcher that itself saw an outage gives every running trial a
full grace period from the moment the storage answered it again, by both tests above.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial

from gafi_opt.errors import StorageLost, one_line
from gafi_opt.storages.outage import last_outage_end

log = logging.getLogger(__name__)

HEARTBEAT = "gafi:heartbeat"  # trial system attr
DEFAULT_INTERVAL = 10
DEFAULT_GRACE = 60
MIN_GRACE_INTERVALS = 3


def configure(storage: BaseStorage, interval: float, grace_period: float) -> None:
    """Turn on Optuna's own heartbeat table where the storage has one (RDB); the others use the attr only."""
    if hasattr(storage, "configure_heartbeat"):
        storage.configure_heartbeat(max(1, math.ceil(interval)), max(1, math.ceil(grace_period)))


def worker_identity() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


class Heartbeat:
    """Beats for one trial from a daemon thread; the first beat is written before `start` returns."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float):
        self.storage = storage
        self.trial_id = trial_id
        self.interval = interval
        self.count = 0
        self.lost = False  # the trial finished under us (another worker failed it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"gafi-heartbeat-{trial_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 30)

    def beat(self) -> None:
        self.count += 1
        try:
            self.storage.set_trial_system_attr(
                self.trial_id, HEARTBEAT, {"n": self.count, "interval": self.interval, "at": round(time.time(), 3), **worker_identity()}
            )
            if is_heartbeat_enabled(self.storage):
                self.storage.record_heartbeat(self.trial_id)
        except UpdateFinishedTrialError:
            self.lost = True
            self._stop.set()
        except StorageLost:
            pass  # the trial's own thread stops the worker, saying why, at its next storage call
        except Exception as exc:  # a storage hiccup must not kill the trial; the next beat may get through
            log.warning("heartbeat of trial id %d not recorded: %s", self.trial_id, one_line(exc, 200))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()


class StaleDetector:
    """Finds and fails RUNNING trials whose worker stopped beating."""

    def __init__(self, grace: float):
        self.grace = grace
        self._seen: dict[int, tuple[str, float]] = {}  # trial id -> (last heartbeat seen, when it changed)

    def grace_for(self, trial: FrozenTrial) -> float:
        beat = trial.system_attrs.get(HEARTBEAT) or {}
        return max(self.grace, MIN_GRACE_INTERVALS * float(beat.get("interval", 0)))

    def stale(self, study: optuna.Study, running: list[FrozenTrial]) -> list[FrozenTrial]:
        """The running trials to give up, by Optuna's heartbeat table or by this process's watch."""
        storage = study._storage
        now = time.monotonic()
        back = last_outage_end(storage) or -math.inf
        found = {}
        for trial in running:
            evidence = json.dumps(trial.system_attrs.get(HEARTBEAT), sort_keys=True)
            previous = self._seen.get(trial._trial_id)
            if previous is None or previous[0] != evidence:
                self._seen[trial._trial_id] = (evidence, now)
            elif now - max(previous[1], back) > self.grace_for(trial):  # silent since it changed, or the storage came back
                found[trial._trial_id] = trial
        live_ids = {t._trial_id for t in running}
        for trial_id in list(self._seen):
            if trial_id not in live_ids:
                del self._seen[trial_id]
        if is_heartbeat_enabled(storage):
            by_id = {t._trial_id: t for t in running}
            stale_ids = storage._get_stale_trial_ids(study._study_id)
            # The database's clock ran on through an outage (which this very call may have waited out).
            since_back = time.monotonic() - (last_outage_end(storage) or -math.inf)
            for trial_id in stale_ids:
                trial = by_id.get(trial_id)
                # Optuna applies this process's grace; skip trials whose own worker beats more slowly.
                if trial is not None and self.grace >= self.grace_for(trial) and since_back > self.grace_for(trial):
                    found[trial_id] = trial
        return list(found.values())
