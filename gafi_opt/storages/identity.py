"""The storage file is still the one this process opened.

Neither SQLite nor Optuna's journal notices a storage file deleted, moved or replaced while workers
use it: open SQLite connections go on writing to the unlinked file (gone when they close), new
connections and journal appends open or create whatever now has the name, and a SQLite file can
end up "malformed" beside another file's write-ahead log. So the file's device and inode are kept
when it is opened, and compared with the path's before every transaction (one stat, microseconds);
a mismatch raises StorageLost naming the file and what became of it, before anything is written.
(A file overwritten in place, `cp other.db gafi.db`, keeps its inode: that is not seen here.)
"""

from __future__ import annotations

import os
from pathlib import Path

from gafi_opt.errors import StorageLost


class FileIdentity:
    def __init__(self, path: str | os.PathLike):
        self.path = os.path.abspath(path)
        status = os.stat(self.path)
        self.key = (status.st_dev, status.st_ino)

    def check(self) -> None:
        """Raise StorageLost unless the path still names the file that was opened."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            fate = self._fate()
            then = ", so that nothing is written where no one will read it" if fate == "deleted" else "; move it back and start again to go on"
            raise StorageLost(f"the storage file {self.path} was {fate} while this process used it: stopped{then}") from None
        self._same_or_raise(status)

    def check_open(self, fd: int) -> None:
        """Raise StorageLost unless the open descriptor fd is the file that was opened first."""
        self._same_or_raise(os.fstat(fd))

    def _same_or_raise(self, status: os.stat_result) -> None:
        if (status.st_dev, status.st_ino) != self.key:
            raise StorageLost(
                f"the storage file {self.path} was replaced by another file while this process used it: stopped without writing to the new one"
            )

    def _fate(self) -> str:
        """'deleted' or 'moved to PATH', read from this process's open descriptors of the file (Linux)."""
        try:
            descriptors = list(Path("/proc/self/fd").iterdir())
        except OSError:
            return "deleted or moved away"
        for descriptor in descriptors:
            try:
                status = os.stat(descriptor)  # the open file itself, wherever its name went
                if (status.st_dev, status.st_ino) == self.key:
                    return "deleted" if status.st_nlink == 0 else f"moved to {os.readlink(descriptor)}"
            except OSError:
                continue
        return "deleted or moved away"
