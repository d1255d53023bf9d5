"""Optuna's journal file, its appends and gafi-opt's insert-if-absent attrs serialised by flock."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path

import optuna

from gafi_opt.storages.atomic import TAS_PREFIX
from gafi_opt.storages.guard import guard_storage_class


def open_journal(url: str) -> "SafeJournalStorage":
    path = Path(url.removeprefix("journal://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return SafeJournalStorage(str(path))


@guard_storage_class
class SafeJournalStorage(optuna.storages.JournalStorage):
    """Optuna's journal file, its appends and our TAS attrs serialised by flock.

    Optuna's default lock is a lock file that a killed writer leaves behind, stalling every
    other worker for its 30 s grace period; a flock is released by the kernel when its holder
    dies. (On NFS, flock needs working file locking: NFSv4, or v3 with lockd.)
    """

    def __init__(self, path: str):
        from optuna.storages.journal import JournalFileBackend

        self.path = path
        self._tas_lock = path + ".tas-lock"
        super().__init__(JournalFileBackend(path, lock_obj=FlockJournalLock(path + ".flock")))

    def set_study_system_attr(self, study_id: int, key: str, value) -> None:
        if not key.startswith(TAS_PREFIX):
            return super().set_study_system_attr(study_id, key, value)
        with _flock(self._tas_lock):
            if key not in super().get_study_system_attrs(study_id):
                super().set_study_system_attr(study_id, key, value)


class FlockJournalLock:
    """The lock JournalFileBackend takes around each append (acquire/release), held with flock."""

    def __init__(self, path: str):
        self.path = path
        self._held = threading.local()

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._held.fd = fd
        return True

    def release(self) -> None:
        fd, self._held.fd = self._held.fd, None
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def _flock(path: str):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


