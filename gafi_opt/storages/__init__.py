"""Storages, like optuna.storages: open one from a URL, and the exactly-once machinery workers build on it.

Public face: `open_storage(url)` (SQLite, PostgreSQL or any SQLAlchemy URL, Optuna's journal file, Optuna's
gRPC proxy), `redact(url)`, `serve_proxy`, and the atomic operations of `atomic`. The backends
(`_rdb`, `_journal`, `_grpc`) are private: they wrap Optuna's storages where a gap needs it (BEGIN
IMMEDIATE on SQLite, retries, Optuna's journal lock made safe against killed writers, an insert-if-absent attr,
a fresh gRPC trial list).
`heartbeat` keeps running trials alive and finds lost ones; `slots` makes every stage's work exactly-once.
"""

from gafi_opt.storages.atomic import TAS_PREFIX, TrialInfo, set_once, trial_info, trial_infos, waiting_trial_ids
from gafi_opt.storages.opening import open_storage, storage_name
from gafi_opt.storages.proxy import serve_proxy
from gafi_opt.storages.urls import is_journal, local_file, redact, redact_text, scrub

__all__ = [
    "TAS_PREFIX",
    "TrialInfo",
    "is_journal",
    "local_file",
    "open_storage",
    "redact",
    "redact_text",
    "scrub",
    "serve_proxy",
    "set_once",
    "storage_name",
    "trial_info",
    "trial_infos",
    "waiting_trial_ids",
]
