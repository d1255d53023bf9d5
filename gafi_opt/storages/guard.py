"""Storage calls are never cut in half by a signal.

A worker turns SIGTERM/SIGINT into an exception raised where its main thread is. Raised inside a
storage call it could leave a journal lock file behind or a transaction half-done, so every call
on gafi-opt's storages is marked; a signal arriving inside one is held until the call returns
(gafi_opt.pipeline.signals' SignalGuard asks `in_storage_call` and installs the leave hook).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

_calls = threading.local()
_leave_hook: Callable[[], None] | None = None


def in_storage_call() -> bool:
    return getattr(_calls, "depth", 0) > 0


def set_leave_hook(hook: Callable[[], None] | None) -> None:
    """`hook()` runs each time the calling thread leaves its outermost storage call (it may raise)."""
    global _leave_hook
    _leave_hook = hook


def _guarded(method):
    @functools.wraps(method)
    def call(*args, **kwargs):
        depth = getattr(_calls, "depth", 0)
        _calls.depth = depth + 1
        try:
            return method(*args, **kwargs)
        finally:
            _calls.depth = depth
            if depth == 0 and _leave_hook is not None:
                _leave_hook()

    return call


_STORAGE_METHODS = (
    "create_new_study delete_study set_study_user_attr set_study_system_attr get_study_id_from_name get_study_name_from_id "
    "get_study_directions get_study_user_attrs get_study_system_attrs get_all_studies create_new_trial set_trial_param "
    "get_trial_id_from_study_id_trial_number get_trial_number_from_id get_trial_param set_trial_state_values "
    "set_trial_intermediate_value set_trial_user_attr set_trial_system_attr get_trial get_all_trials get_n_trials "
    "get_best_trial get_trial_params get_trial_user_attrs get_trial_system_attrs record_heartbeat _get_stale_trial_ids "
    "waiting_trial_ids trial_infos insert_if_absent"
).split()


def guard_storage_class(cls):
    for name in _STORAGE_METHODS:
        if hasattr(cls, name):
            setattr(cls, name, _guarded(getattr(cls, name)))
    return cls


