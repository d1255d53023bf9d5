"""Optuna's journal file, its appends and gafi-opt's insert-if-absent attrs serialised by flock; every
read and append first checks that the file is still the one opened (gafi_opt.storages.identity)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend

from gafi_opt.storages.atomic import TAS_PREFIX
from gafi_opt.storages.guard import guard_storage_class
from gafi_opt.storages.identity import FileIdentity


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
        self.path = path
        self._tas_lock = path + ".tas-lock"
        super().__init__(CheckedJournalFileBackend(path, lock_obj=FlockJournalLock(path + ".flock")))

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
        self.identity = FileIdentity(path)

    def read_logs(self, log_number_from: int):
        self.identity.check()
        return super().read_logs(log_number_from)

    def append_logs(self, logs: list) -> None:
        self.identity.check()
        super().append_logs(logs)


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


