"""What exactly-once work needs of a storage beyond Optuna's API: an atomic insert-if-absent study attr
(`set_once`), and light reads of trial states and a few system attrs.

Storages that can do better than Optuna's generic calls (the RDB wrapper: one INSERT decides, two light
queries instead of whole trials) offer `insert_if_absent`, `trial_infos` and `waiting_trial_ids`; the
others are served through Optuna's API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from optuna.storages import BaseStorage
from optuna.trial import TrialState

TAS_PREFIX = "gafi:tas:"  # study system attrs written with insert-if-absent semantics


def set_once(storage: BaseStorage, study_id: int, key: str, value) -> bool:
    """Write study system attr `key` = `value` unless it exists; True if `value` is what is stored now.

    `value` must be unique to the caller (a trial id, a nonce), so that reading it back tells
    whether this call or an earlier one won.
    """
    assert key.startswith(TAS_PREFIX), key
    if hasattr(storage, "insert_if_absent"):
        return storage.insert_if_absent(study_id, key, value)  # the database says who won: no read back
    storage.set_study_system_attr(study_id, key, value)
    return storage.get_study_system_attrs(study_id).get(key) == value


@dataclass(frozen=True)
class TrialInfo:
    """A trial's number, state and some of its system attrs: what claiming and sweeping look at."""

    trial_id: int
    number: int
    state: TrialState
    system_attrs: dict

    @property
    def _trial_id(self) -> int:  # read like a FrozenTrial
        return self.trial_id


def trial_info(storage: BaseStorage, trial_id: int, keys: Sequence[str]) -> TrialInfo:
    """One trial's number, state and system attrs `keys` (on RDB without loading the whole trial)."""
    if hasattr(storage, "trial_infos"):
        return storage.trial_infos(None, keys, trial_id=trial_id)[0]
    t = storage.get_trial(trial_id)
    return TrialInfo(t._trial_id, t.number, t.state, {k: t.system_attrs[k] for k in keys if k in t.system_attrs})


def trial_infos(storage: BaseStorage, study_id: int, keys: Sequence[str]) -> list[TrialInfo]:
    """The study's trials with the system attrs `keys`; on RDB two light queries instead of whole trials."""
    if hasattr(storage, "trial_infos"):
        return storage.trial_infos(study_id, keys)
    return [
        TrialInfo(t._trial_id, t.number, t.state, {k: t.system_attrs[k] for k in keys if k in t.system_attrs})
        for t in storage.get_all_trials(study_id, deepcopy=False)
    ]


def waiting_trial_ids(storage: BaseStorage, study_id: int) -> list[int]:
    """Ids of the study's WAITING trials, oldest first (on RDB without loading whole trials)."""
    if hasattr(storage, "waiting_trial_ids"):
        return storage.waiting_trial_ids(study_id)
    return [t._trial_id for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))]


