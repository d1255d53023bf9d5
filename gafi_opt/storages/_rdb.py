"""Optuna's RDBStorage (SQLite, PostgreSQL, any SQLAlchemy database), safe for many concurrent workers.

SQLite: WAL mode and a busy timeout; every transaction that may write starts with BEGIN IMMEDIATE
(pysqlite's default deferred transactions read outside the write lock, so two processes can both
"claim" the same WAITING trial); every transaction first checks that the file is still the one
opened (gafi_opt.storages.identity). Every call rides out a lock timeout or a database outage
(gafi_opt.storages.outage). PostgreSQL: Optuna's row locks (SELECT ... FOR UPDATE) make claiming
and finishing a trial atomic.
Not wrapped in Optuna's trial cache, whose "trials after the last finished id" reads can miss a trial
that a concurrent PostgreSQL transaction committed late.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

from gafi_opt.errors import GafiError
from gafi_opt.storages.atomic import TAS_PREFIX, TrialInfo
from gafi_opt.storages.guard import guard_storage_class
from gafi_opt.storages.identity import FileIdentity
from gafi_opt.storages.outage import DEFAULT_OUTAGE_S, Outage, StorageUnreachable
from gafi_opt.storages.urls import redact

SQLITE_BUSY_TIMEOUT_S = 30


_deferred = threading.local()  # set while a read-only call runs: its transaction needs no write lock


def open_rdb(url: str) -> "SafeRDBStorage":
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise GafiError(
            f"not a storage URL: {redact(url)} (expected sqlite:///..., postgresql+psycopg://..., journal:///... or grpc://host:port)"
        ) from None
    sqlite = parsed.get_backend_name() == "sqlite"
    engine_kwargs: dict = {}
    if sqlite:
        if not parsed.database or parsed.database == ":memory:":
            raise GafiError("an in-memory SQLite storage cannot be shared by workers: give a file, sqlite:///path.db")
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True
    # Opening does not wait for a database that is down: a mistyped host or port must not hang.
    outage = Outage(redact(url), limit=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Workers opening a fresh database together race to create its tables: try again.
        try:
            rdb = outage.call(lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs), also=_creation_race)
        except StorageUnreachable as exc:
            raise GafiError(f"cannot open storage {redact(url)}: it is unreachable ({exc.reason})") from None
    if sqlite:
        _make_sqlite_transactions_immediate(rdb.engine, FileIdentity(parsed.database))
    outage.limit = DEFAULT_OUTAGE_S
    return SafeRDBStorage(rdb, outage)


def _make_sqlite_transactions_immediate(engine, identity: FileIdentity) -> None:
    """WAL, and BEGIN IMMEDIATE for every transaction that may write (SQLAlchemy's documented recipe);
    no connection or transaction on a file other than the one opened."""

    @event.listens_for(engine, "do_connect")
    def _before_connect(*_args):
        identity.check()  # before sqlite3 opens the path, and would create a file where one was deleted

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # pysqlite stops issuing its own (deferred) BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe with WAL
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        identity.check()
        # A deferred transaction that reads then writes can lose its snapshot and fail with
        # SQLITE_BUSY at once (no busy wait); IMMEDIATE takes the write lock up front, waiting.
        connection.exec_driver_sql("BEGIN" if getattr(_deferred, "on", False) else "BEGIN IMMEDIATE")

    engine.dispose()  # connections made while Optuna created its tables lack the settings


def _creation_race(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, DBAPIError) and ("already exists" in text or "duplicate key" in text)


@guard_storage_class
class SafeRDBStorage(BaseStorage, BaseHeartbeat):
    """Optuna's RDBStorage behind retries of locks and outages, with insert-if-absent TAS attrs.

    Deliberately not an RDBStorage subclass: Optuna would wrap it in its trial cache.
    """

    def __init__(self, rdb: optuna.storages.RDBStorage, outage: Outage):
        self.rdb = rdb
        self.outage = outage

    def _write(self, name: str, *args, **kwargs):
        method = getattr(self.rdb, name)
        return self.outage.call(lambda: method(*args, **kwargs))

    def _read(self, name: str, *args, **kwargs):
        method = getattr(self.rdb, name)

        def call():
            _deferred.on = True
            try:
                return method(*args, **kwargs)
            finally:
                _deferred.on = False

        return self.outage.call(call)

    # study
    def create_new_study(self, directions, study_name: str | None = None) -> int:
        return self._write("create_new_study", directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._write("delete_study", study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._write("set_study_user_attr", study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value) -> None:
        if key.startswith(TAS_PREFIX):
            self.insert_if_absent(study_id, key, value)
        else:
            self._write("set_study_system_attr", study_id, key, value)

    def insert_if_absent(self, study_id: int, key: str, value) -> bool:
        """Insert the study system attr; False if (study_id, key) exists (the table's unique constraint)."""
        from optuna.storages._rdb.models import StudySystemAttributeModel

        table = StudySystemAttributeModel.__table__

        def call() -> bool:
            try:
                with self.rdb.engine.begin() as connection:
                    connection.execute(table.insert().values(study_id=study_id, key=key, value_json=json.dumps(value)))
            except IntegrityError:
                return False  # an earlier writer won
            return True

        return self.outage.call(call)

    def waiting_trial_ids(self, study_id: int) -> list[int]:
        from optuna.storages._rdb.models import TrialModel

        table = TrialModel.__table__
        query = table.select().with_only_columns(table.c.trial_id).where(table.c.study_id == study_id, table.c.state == TrialState.WAITING)

        def call():
            _deferred.on = True
            try:
                with self.rdb.engine.connect() as connection:
                    return [row[0] for row in connection.execute(query.order_by(table.c.trial_id))]
            finally:
                _deferred.on = False

        return self.outage.call(call)

    def trial_infos(self, study_id: int | None, keys: Sequence[str], trial_id: int | None = None) -> list[TrialInfo]:
        """The study's trials (or the one trial `trial_id`) with the system attrs `keys`."""
        from optuna.storages._rdb.models import TrialModel, TrialSystemAttributeModel

        trials, attrs = TrialModel.__table__, TrialSystemAttributeModel.__table__
        which = trials.c.study_id == study_id if trial_id is None else trials.c.trial_id == trial_id
        rows = trials.select().with_only_columns(trials.c.trial_id, trials.c.number, trials.c.state).where(which)
        values = (
            attrs.select()
            .with_only_columns(attrs.c.trial_id, attrs.c.key, attrs.c.value_json)
            .join_from(attrs, trials, attrs.c.trial_id == trials.c.trial_id)
            .where(which, attrs.c.key.in_(list(keys)))
        )

        def call():
            _deferred.on = True
            try:
                with self.rdb.engine.connect() as connection:
                    # Trials first: a trial's creation attrs are committed with it, so none is seen without them.
                    listed = list(connection.execute(rows.order_by(trials.c.trial_id)))
                    found: dict[int, dict] = {}
                    for owner, key, value in connection.execute(values):
                        found.setdefault(owner, {})[key] = json.loads(value)
                    if trial_id is not None and not listed:
                        raise KeyError(f"no trial with id {trial_id}")
                    return [TrialInfo(i, n, state, found.get(i, {})) for i, n, state in listed]
            finally:
                _deferred.on = False

        return self.outage.call(call)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._read("get_study_id_from_name", study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._read("get_study_name_from_id", study_id)

    def get_study_directions(self, study_id: int):
        return self._read("get_study_directions", study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._read("get_study_user_attrs", study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._read("get_study_system_attrs", study_id)

    def get_all_studies(self):
        return self._read("get_all_studies")

    # trial
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._write("create_new_trial", study_id, template_trial)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float, distribution) -> None:
        self._write("set_trial_param", trial_id, param_name, param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._read("get_trial_id_from_study_id_trial_number", study_id, trial_number)

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self._read("get_trial_param", trial_id, param_name)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        return self._write("set_trial_state_values", trial_id, state, values)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._write("set_trial_intermediate_value", trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._write("set_trial_user_attr", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value) -> None:
        self._write("set_trial_system_attr", trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._read("get_trial", trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._read("get_all_trials", study_id, deepcopy, states)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._read("get_best_trial", study_id)

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._read("get_trial_user_attrs", trial_id)

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self._read("get_trial_system_attrs", trial_id)

    def configure_heartbeat(self, interval: int, grace_period: int) -> None:
        self.rdb.heartbeat_interval = interval
        self.rdb.grace_period = grace_period

    def remove_session(self) -> None:
        self.rdb.remove_session()

    # Optuna's heartbeat (BaseHeartbeat), kept in the database's own clock
    def record_heartbeat(self, trial_id: int) -> None:
        self._write("record_heartbeat", trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self._read("_get_stale_trial_ids", study_id)

    def get_heartbeat_interval(self) -> int | None:
        return self.rdb.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self):
        return None  # stale trials are re-queued by the workers (gafi_opt/slots.py), not by a callback


