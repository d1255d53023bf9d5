"""A database that blinks: storage calls ride out an outage, then give up in one line.

A call that cannot reach the database (refused, shutting down or starting up, a dropped connection,
a database closed to connections) changed nothing: its transaction was rolled back. So it is tried
again, after 0.05 s, then twice as long each time up to MAX_DELAY_S, until the database answers or
the outage has lasted `limit` seconds (DEFAULT_OUTAGE_S, or `--storage-outage`); then
`StorageUnreachable`. A worker thereby keeps a trained trial's result until the database takes it.

The outage belongs to the storage and is shared by the threads of a process (a trial and its
heartbeat): it starts at the first failed call after a success and ends at the next success. One
line says that the process waits (once a retry has failed too: a single dropped connection is no
news) and one that the storage is back; `back_at` tells the stale-trial sweep that no heartbeat
could get through meanwhile (gafi_opt.storages.heartbeat).

A lock held by another writer (SQLite's "database is locked", after its busy timeout) is retried
LOCK_RETRIES times; any other error is raised at once. Messages name the storage with its password hidden.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from optuna.storages import BaseStorage
from sqlalchemy.exc import DBAPIError

from gafi_opt.errors import StorageLost

log = logging.getLogger(__name__)

DEFAULT_OUTAGE_S = 60.0
FIRST_DELAY_S = 0.05
MAX_DELAY_S = 2.0  # also bounds how late a worker notices that the database is back
LOCK_RETRIES = 8

# What libpq and PostgreSQL say when the server cannot be reached or drops the connection (a stop, a
# restart, pg_terminate_backend, ALTER DATABASE ... ALLOW_CONNECTIONS false), as found in the error
# chain; connection failures carry no SQLSTATE, so their text is all there is. Typos (an unknown
# database, host or user, a wrong password) are not here: those fail at once.
UNREACHABLE = (
    "connection refused",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "is not currently accepting connections",
    "terminating connection due to administrator command",
    "server closed the connection unexpectedly",
    "connection timeout expired",
    "could not receive data from server",
    "could not send data to server",
    "connection reset by peer",
    "no route to host",
    "network is unreachable",
    "too many connections",
    "remaining connection slots are reserved",
)
# SQLSTATEs of a lost connection: class 08, admin/crash shutdown, cannot connect now, too many connections.
UNREACHABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
LOCKED = ("database is locked", "database table is locked", "database is busy")


class StorageUnreachable(StorageLost):
    """The database stayed unreachable for longer than the process waits; `reason` says how it failed."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def unreachable_reason(exc: BaseException) -> str | None:
    """Why `exc` means the database could not be reached ("connection refused", ...); None if it does not."""
    chain = list(_chain(exc))
    for link in chain:
        text = str(link).lower()
        for marker in UNREACHABLE:
            if marker in text:
                return marker
    for link in chain:
        sqlstate = getattr(link, "sqlstate", None) or getattr(link, "pgcode", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(UNREACHABLE_SQLSTATES):
            return f"connection lost, SQLSTATE {sqlstate}"
        if isinstance(link, DBAPIError) and link.connection_invalidated:
            return "connection lost"
    return None


def is_locked(exc: BaseException) -> bool:
    """Another writer holds the lock (SQLite): the transaction was rolled back, trying again is safe."""
    return any(marker in str(link).lower() for link in _chain(exc) for marker in LOCKED)


def _chain(exc: BaseException | None):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _never(_exc: BaseException) -> bool:
    return False


class Outage:
    """Retries a storage's calls through an outage of up to `limit` seconds (0: not at all)."""

    def __init__(self, name: str, limit: float = DEFAULT_OUTAGE_S, say: Callable[[str], None] | None = None):
        self.name = name  # the storage's URL, password hidden
        self.limit = limit
        self.say = say or log.warning
        self.back_at: float | None = None  # time.monotonic() when the last outage ended
        self._lock = threading.Lock()
        self._since: float | None = None  # when the current outage began
        self._failures = 0
        self._announced = False

    def call(self, fn: Callable[[], Any], also: Callable[[BaseException], bool] = _never) -> Any:
        """`fn()`, tried again through an outage, a held lock, or an error `also` calls transient."""
        delay, tries = FIRST_DELAY_S, 0
        while True:
            try:
                result = fn()
            except Exception as exc:
                reason = unreachable_reason(exc)
                if reason is not None:
                    left = self._failed(reason, exc)
                else:
                    tries += 1
                    if tries >= LOCK_RETRIES or not (is_locked(exc) or also(exc)):
                        raise
                    left = delay
                time.sleep(min(delay, left))
                delay = min(2 * delay, MAX_DELAY_S)
            else:
                if self._since is not None:
                    self._recovered()
                return result

    def _failed(self, reason: str, exc: BaseException) -> float:
        """Count a failed call; the seconds left to wait, or StorageUnreachable once there are none."""
        with self._lock:
            now = time.monotonic()
            if self._since is None:
                self._since, self._failures, self._announced = now, 0, False
            self._failures += 1
            waited = now - self._since
            if waited >= self.limit:
                raise StorageUnreachable(
                    f"the storage at {self.name} stayed unreachable ({reason}) for {waited:.0f} s (--storage-outage {self.limit:g}): "
                    "stopped; finished trials are kept there, and a trial left running is re-run by the next worker once it is back",
                    reason,
                ) from exc
            if self._failures >= 2 and not self._announced:
                self._announced = True
                self.say(f"the storage at {self.name} is unreachable ({reason}); retrying for up to {self.limit:g} s")
            return self.limit - waited

    def _recovered(self) -> None:
        with self._lock:
            if self._since is None:
                return  # another thread got there first
            now = time.monotonic()
            if self._announced:
                self.say(f"the storage at {self.name} is back after {now - self._since:.0f} s")
            self._since = None
            self.back_at = now


def set_outage_limit(storage: BaseStorage, seconds: float) -> None:
    """How long `storage`'s calls wait for an unreachable database (storages without a server: no effect)."""
    outage = getattr(storage, "outage", None)
    if outage is not None:
        outage.limit = seconds


def last_outage_end(storage: BaseStorage) -> float | None:
    """time.monotonic() when this process last saw `storage` come back from an outage; None if it never did."""
    outage = getattr(storage, "outage", None)
    return None if outage is None else outage.back_at
