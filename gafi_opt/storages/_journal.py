"""Optuna's journal file, appended to under Optuna's own lock, with gafi-opt's insert-if-absent attrs.

Every writer of a journal file must take the same lock, or two appends can interleave and corrupt
the log. Optuna's clients (its CLI, optuna-dashboard, a plain
`JournalStorage(JournalFileBackend(path))`) lock by creating `<journal>.lock` exclusively (a symlink
by default, or an O_EXCL file with JournalFileOpenLock: each fails while the other exists), and a
lock left by a killed holder is broken by its waiters after a 30 s grace period. gafi-opt's workers
take that same lock file, so they and Optuna's clients exclude one another.

What a flock adds: gafi-opt's writers first take a flock on `<journal>.flock` (which only gafi-opt
takes; the kernel releases it when its holder dies), then `<journal>.lock`, writing their name
into it. A gafi-opt writer that holds the flock and finds a `.lock` with a gafi-opt name in it
knows its holder is dead, and breaks it at once: a SIGKILLed worker does not stall the others.
A lock left by an Optuna client that died, or by a gafi-opt writer killed in the microseconds
between creating the file and naming itself in it, is broken after Optuna's grace period, as
Optuna's own clients do. (On NFS: flock needs NFSv4, or v3 with lockd; the exclusive create, NFSv3.)
Every read and append first checks that the path still names the file opened (gafi_opt.storages.identity).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import stat
import threading
import time
import uuid
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from gafi_opt.storages.atomic import TAS_PREFIX
from gafi_opt.storages.guard import guard_storage_class
from gafi_opt.storages.identity import FileIdentity

log = logging.getLogger(__name__)

OWNER_TAG = "gafi-opt journal writer"  # how a lock file written by gafi-opt begins
GRACE_PERIOD_S = 30  # Optuna's default: a foreign lock unchanged this long is presumed dead
MAX_POLL_S = 0.05


def open_journal(url: str) -> "SafeJournalStorage":
    path = Path(url.removeprefix("journal://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return SafeJournalStorage(str(path))


@guard_storage_class
class SafeJournalStorage(optuna.storages.JournalStorage):
    """Optuna's journal file under Optuna's own lock (see the module doc), and TAS attrs under a flock."""

    def __init__(self, path: str):
        self.path = path
        self._tas_lock = path + ".tas-lock"
        super().__init__(CheckedJournalFileBackend(path, lock_obj=JournalLock(path)))

    def set_study_system_attr(self, study_id: int, key: str, value) -> None:
        if not key.startswith(TAS_PREFIX):
            return super().set_study_system_attr(study_id, key, value)
        with _flock(self._tas_lock):
            if key not in super().get_study_system_attrs(study_id):
                super().set_study_system_attr(study_id, key, value)


class CheckedJournalFileBackend(JournalFileBackend):
    """Optuna's journal file, refusing to read or append once its path names another file or none
    (an append would create a new journal holding only the latest operations)."""

    def __init__(self, path: str, lock_obj):
        super().__init__(path, lock_obj=lock_obj)  # creates the file if it is not there
        self.path = path
        self.journal_lock = lock_obj
        self.identity = FileIdentity(path)

    def read_logs(self, log_number_from: int):
        self.identity.check()
        try:
            yield from super().read_logs(log_number_from)
        except FileNotFoundError:  # deleted between the check and the open
            self.identity.check()
            raise

    def append_logs(self, logs: list) -> None:
        """Optuna's append, except that it opens without creating and writes only to the file it
        opened first: Optuna's own opens with "ab", which makes a new journal where one was deleted."""
        lines = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs).encode()
        self.journal_lock.acquire()
        try:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                self.identity.check()
                raise
            with open(fd, "ab") as journal:
                self.identity.check_open(fd)
                journal.write(lines)
                journal.flush()
                os.fsync(fd)
        finally:
            self.journal_lock.release()


class JournalLock(JournalFileOpenLock):
    """The lock JournalFileBackend takes around each append: Optuna's `<journal>.lock`, under a gafi-opt flock."""

    def __init__(self, path: str, grace_period: int | None = GRACE_PERIOD_S):
        super().__init__(path, grace_period)  # sets self._lock_file = path + ".lock", Optuna's name
        self.lock_path = self._lock_file
        self.flock_path = path + ".flock"
        self._held = threading.local()

    def acquire(self) -> bool:
        fd = os.open(self.flock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._held.token = self._take_lock_file()
        except BaseException:
            os.close(fd)  # closing releases the flock
            raise
        self._held.fd = fd
        return True

    def release(self) -> None:
        fd, token = self._held.fd, self._held.token
        self._held.fd = self._held.token = None
        try:
            if self._owner() == token:
                _remove(self.lock_path)
            else:  # an Optuna client broke it after its grace period while this process was stopped
                log.warning("the journal lock %s was broken by another client while held", self.lock_path)
        finally:
            os.close(fd)

    def _take_lock_file(self) -> str:
        """Create the lock file with this writer's name in it; wait for (or break) whoever holds it."""
        token = f"{OWNER_TAG} {socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}"
        poll, seen = 0.001, None  # seen: (the holder's lstat identity, since when it is unchanged)
        while True:
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            else:
                try:
                    os.write(fd, token.encode())
                except BaseException:
                    os.close(fd)
                    _remove(self.lock_path)
                    raise
                os.close(fd)
                return token
            owner = self._owner()
            if owner is not None and owner.startswith(OWNER_TAG):
                # We hold the flock, so no live gafi-opt writer holds the lock file: its writer died
                # (across machines this relies on flock over the shared file system, as the TAS attrs do).
                log.warning("breaking the journal lock %s left by a dead writer (%s)", self.lock_path, owner.removeprefix(OWNER_TAG).strip())
                _remove(self.lock_path)
                continue
            identity = _identity(self.lock_path)
            now = time.monotonic()
            if identity is None:
                continue  # released meanwhile
            if seen is None or seen[0] != identity:
                seen = (identity, now)
            elif self.grace_period is not None and now - seen[1] > self.grace_period:
                log.warning("breaking the journal lock %s: unchanged for %d s (its holder is presumed dead)", self.lock_path, self.grace_period)
                _remove(self.lock_path)
                seen = None
                continue
            time.sleep(poll)
            poll = min(poll * 2, MAX_POLL_S)

    def _owner(self) -> str | None:
        """The name written in the lock file; None for a symlink (Optuna's default lock), an empty or missing file."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None  # gone, or a symlink (ELOOP)
        try:
            return os.read(fd, 512).decode(errors="replace") or None
        finally:
            os.close(fd)


def _identity(path: str) -> tuple | None:
    """What changes when a lock file is replaced or touched (the lock itself, not a symlink's target)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_mtime_ns, stat.S_IFMT(info.st_mode))


def _remove(path: str) -> None:
    """Remove a lock file as Optuna releases one: rename to a unique name, then unlink (atomic for waiters)."""
    moved = f"{path}{uuid.uuid4().hex}.rename"
    try:
        os.rename(path, moved)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return
    os.unlink(moved)


@contextlib.contextmanager
def _flock(path: str):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
