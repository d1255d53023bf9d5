"""SIGTERM and Ctrl-C in a worker: deferred to safe points, then raised as `Interrupted`."""

from __future__ import annotations

import contextlib
import signal
import threading

from gafi_opt.storages.guard import in_storage_call, set_leave_hook


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
