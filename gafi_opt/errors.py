"""The one exception type the CLI turns into a one-line message and exit status 2, and how to quote others."""


class GafiError(Exception):
    """Bad input from the user: a spec, a file, a URL, a flag. The message names the problem."""


class StorageLost(GafiError):
    """The storage a process opened cannot be used any more: unreachable for longer than the process
    waits, or its file deleted, moved or replaced. Nothing more can be written, so a worker stops at
    once (its running trial is left to the heartbeat sweep of whoever uses the storage next)."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (library messages often span several), cut at `limit` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."
