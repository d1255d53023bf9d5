"""Opening Optuna storages from URLs, safe for many concurrent workers, with errors that hide credentials.

- `sqlite:///path.db`: one machine. WAL mode and a busy timeout; every transaction that may
  write starts with BEGIN IMMEDIATE (pysqlite's default deferred transactions read outside the
  write lock, so two processes can both "claim" the same WAITING trial); transient
  "database is locked" errors are retried instead of surfacing.
- `postgresql+psycopg://user:pass@host/db` (any SQLAlchemy URL): many machines. Optuna's
  row locks (SELECT ... FOR UPDATE) make claiming and finishing a trial atomic.
- `journal:///path/to/file.log` (or a path ending in .log/.jsonl): Optuna's journal file;
  the log's order decides every race.
- `grpc://host:port`: Optuna's gRPC storage proxy, started by `gafi-opt storage-proxy`.

Besides Optuna's API, every storage opened here offers `set_once`: write a study system
attr only if it is absent, atomically, and say whether this caller's value won. Workers build
their exactly-once claims on it (gafi_opt/slots.py). RDB storages are not wrapped in Optuna's
trial cache, whose "trials after the last finished id" reads can miss a trial that a
concurrent PostgreSQL transaction committed late.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError

from gafi_opt.errors import GafiError

SQLITE_BUSY_TIMEOUT_S = 30
TAS_PREFIX = "gafi:tas:"  # study system attrs written with insert-if-absent semantics
RETRY_ATTEMPTS = 8  # transient storage errors: retried with exponential backoff (about a minute in all)
GRPC_CONNECT_TIMEOUT_S = 10


# ---------------------------------------------------------------- storage calls are never cut in half
#
# A worker turns SIGTERM/SIGINT into an exception raised where its main thread is. Raised inside a
# storage call it could leave a journal lock file behind or a transaction half-done, so every call
# on the storages below is marked; a signal arriving inside one is held until the call returns
# (gafi_opt/distributed.py's SignalGuard asks `in_storage_call` and installs the leave hook).

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


def _guard_storage_class(cls):
    for name in _STORAGE_METHODS:
        if hasattr(cls, name):
            setattr(cls, name, _guarded(getattr(cls, name)))
    return cls


def redact(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs, errors and exports."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


def redact_text(text: str) -> str:
    """Any `scheme://user:password@` in free text (an error message) with the password hidden."""
    return re.sub(r"(\w[\w+.-]*://[^:/@\s]+):[^@\s]*@", r"\1:***@", text)


def scrub(text: str, url: str) -> str:
    """`text` with the URL's password (and the URL itself) replaced, for error messages."""
    if url:
        text = text.replace(url, redact(url))
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return redact_text(text)


def local_file(url: str) -> Path | None:
    """The file behind a SQLite or journal URL; None for a database server, a proxy or a URL that does not parse."""
    if is_journal(url):
        return Path(url.removeprefix("journal://"))
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def is_journal(url: str) -> bool:
    return url.startswith("journal://") or url.endswith((".log", ".jsonl"))


def open_storage(url: str, must_exist: bool = False) -> BaseStorage:
    """An Optuna storage for `url`, or a GafiError with the (redacted) URL and the reason.

    `must_exist` (commands that only read: status, export, dashboard, a worker joining): a SQLite
    or journal file that is not there is an error, rather than a new empty storage made by a typo.
    """
    if must_exist:
        path = local_file(url)
        if path is not None and not path.exists():
            raise GafiError(f"no storage at {path}: nothing has been run there (check the path; `gafi-opt run` creates it)")
    try:
        if is_journal(url):
            return _journal(url)
        if url.startswith("grpc://"):
            return _grpc(url)
        return _rdb(url)
    except GafiError:
        raise
    except Exception as exc:
        message = scrub(" ".join(str(exc).split()), url)
        raise GafiError(f"cannot open storage {redact(url)}: {message[:300]}") from None


def configure_heartbeat(storage: BaseStorage, interval: int, grace_period: int) -> None:
    """Turn on Optuna's own heartbeat on RDB storages (others use the workers' heartbeat attr only)."""
    if isinstance(storage, SafeRDBStorage):
        storage.rdb.heartbeat_interval = max(1, int(interval))
        storage.rdb.grace_period = max(1, int(grace_period))


def set_once(storage: BaseStorage, study_id: int, key: str, value) -> bool:
    """Write study system attr `key` = `value` unless it exists; True if `value` is what is stored now.

    `value` must be unique to the caller (a trial id, a nonce), so that reading it back tells
    whether this call or an earlier one won.
    """
    assert key.startswith(TAS_PREFIX), key
    if isinstance(storage, SafeRDBStorage):
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
    if isinstance(storage, SafeRDBStorage):
        return storage.trial_infos(None, keys, trial_id=trial_id)[0]
    t = storage.get_trial(trial_id)
    return TrialInfo(t._trial_id, t.number, t.state, {k: t.system_attrs[k] for k in keys if k in t.system_attrs})


def trial_infos(storage: BaseStorage, study_id: int, keys: Sequence[str]) -> list[TrialInfo]:
    """The study's trials with the system attrs `keys`; on RDB two light queries instead of whole trials."""
    if isinstance(storage, SafeRDBStorage):
        return storage.trial_infos(study_id, keys)
    return [
        TrialInfo(t._trial_id, t.number, t.state, {k: t.system_attrs[k] for k in keys if k in t.system_attrs})
        for t in storage.get_all_trials(study_id, deepcopy=False)
    ]


def waiting_trial_ids(storage: BaseStorage, study_id: int) -> list[int]:
    """Ids of the study's WAITING trials, oldest first (on RDB without loading whole trials)."""
    if isinstance(storage, SafeRDBStorage):
        return storage.waiting_trial_ids(study_id)
    return [t._trial_id for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))]


# ---------------------------------------------------------------- RDB


_deferred = threading.local()  # set while a read-only call runs: its transaction needs no write lock


def _rdb(url: str) -> "SafeRDBStorage":
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Workers opening a fresh database together race to create its tables: try again.
        rdb = _retry(lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs), also=_creation_race)
    if sqlite:
        _make_sqlite_transactions_immediate(rdb.engine)
    return SafeRDBStorage(rdb)


def _make_sqlite_transactions_immediate(engine) -> None:
    """WAL, and BEGIN IMMEDIATE for every transaction that may write (SQLAlchemy's documented recipe)."""

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
        # A deferred transaction that reads then writes can lose its snapshot and fail with
        # SQLITE_BUSY at once (no busy wait); IMMEDIATE takes the write lock up front, waiting.
        connection.exec_driver_sql("BEGIN" if getattr(_deferred, "on", False) else "BEGIN IMMEDIATE")

    engine.dispose()  # connections made while Optuna created its tables lack the settings


def _transient(exc: BaseException) -> bool:
    """A lock timeout or a dropped connection: the transaction was rolled back, retrying is safe."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, OperationalError):
            text = str(exc).lower()
            if "database is locked" in text or "database table is locked" in text or "database is busy" in text:
                return True
        exc = exc.__cause__ or exc.__context__
    return False


def _creation_race(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, DBAPIError) and ("already exists" in text or "duplicate key" in text)


def _retry(call: Callable[[], Any], also: Callable[[BaseException], bool] = lambda exc: False):
    delay = 0.05
    for attempt in range(RETRY_ATTEMPTS):
        try:
            return call()
        except Exception as exc:
            if attempt == RETRY_ATTEMPTS - 1 or not (_transient(exc) or also(exc)):
                raise
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


@_guard_storage_class
class SafeRDBStorage(BaseStorage, BaseHeartbeat):
    """Optuna's RDBStorage behind retries of transient errors, with insert-if-absent TAS attrs.

    Deliberately not an RDBStorage subclass: Optuna would wrap it in its trial cache.
    """

    def __init__(self, rdb: optuna.storages.RDBStorage):
        self.rdb = rdb

    def _write(self, name: str, *args, **kwargs):
        method = getattr(self.rdb, name)
        return _retry(lambda: method(*args, **kwargs))

    def _read(self, name: str, *args, **kwargs):
        method = getattr(self.rdb, name)

        def call():
            _deferred.on = True
            try:
                return method(*args, **kwargs)
            finally:
                _deferred.on = False

        return _retry(call)

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

        return _retry(call)

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

        return _retry(call)

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

        return _retry(call)

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


# ---------------------------------------------------------------- journal


def _journal(url: str) -> "SafeJournalStorage":
    path = Path(url.removeprefix("journal://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return SafeJournalStorage(str(path))


@_guard_storage_class
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


# ---------------------------------------------------------------- gRPC


def _grpc(url: str) -> "FreshGrpcStorageProxy":
    host, _, port = url.removeprefix("grpc://").rstrip("/").partition(":")
    try:
        port_number = int(port or 13000)
    except ValueError:
        raise GafiError(f"not a gRPC storage URL: {redact(url)} (expected grpc://host:port)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = FreshGrpcStorageProxy(host=host or "localhost", port=port_number)
    try:
        storage.wait_server_ready(timeout=GRPC_CONNECT_TIMEOUT_S)
    except ConnectionError:
        raise GafiError(
            f"no gRPC storage proxy answers at {host or 'localhost'}:{port_number} (start one with `gafi-opt storage-proxy`)"
        ) from None
    return storage


@_guard_storage_class
class FreshGrpcStorageProxy(optuna.storages.GrpcStorageProxy):
    """Optuna's gRPC client, reading each study's trials afresh, and checking the proxy's TAS support.

    Its cache fetches only trials after the last finished id, so a trial committed late by a
    concurrent transaction could stay invisible; stages hold tens of trials, a full read is cheap.
    """

    _tas_checked = False

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        self._cache.delete_study_cache(study_id)
        return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)

    def set_study_system_attr(self, study_id: int, key: str, value) -> None:
        if key.startswith(TAS_PREFIX) and not self._tas_checked:
            self._check_tas(study_id)
        super().set_study_system_attr(study_id, key, value)

    def _check_tas(self, study_id: int) -> None:
        """A plain Optuna proxy overwrites attrs (last writer wins); ours keeps the first value."""
        key = TAS_PREFIX + "probe"
        first, second = f"probe-{uuid.uuid4()}", f"probe-{uuid.uuid4()}"
        super().set_study_system_attr(study_id, key, first)
        super().set_study_system_attr(study_id, key, second)
        if super().get_study_system_attrs(study_id).get(key) == second:
            raise GafiError(
                f"the gRPC proxy at {self._host}:{self._port} overwrites attributes, so workers cannot claim trials "
                "atomically through it: start it with `gafi-opt storage-proxy`"
            )
        self._tas_checked = True


def serve_proxy(url: str, host: str, port: int, ready: Callable[[], None] | None = None) -> None:
    """Serve an RDB storage through Optuna's gRPC proxy until interrupted (blocks).

    The storage served is a SafeRDBStorage, so TAS attrs keep their first value (a plain
    Optuna proxy would overwrite them, and clients refuse it).
    """
    if is_journal(url) or url.startswith("grpc://"):
        raise GafiError(f"the gRPC proxy serves an RDB storage (sqlite:///..., postgresql+psycopg://...), not {redact(url)}")
    storage = open_storage(url)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:  # say "listening" only for an address that can be had
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError as exc:
            raise GafiError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if ready is not None:
        ready()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            # Each worker holds a request at a time, plus its heartbeat thread's.
            optuna.storages.run_grpc_proxy_server(storage, host=host, port=port, thread_pool=ThreadPoolExecutor(max_workers=64))
        except RuntimeError as exc:  # grpcio: the address cannot be bound
            raise GafiError(f"cannot listen on {host}:{port}: {exc}") from None


def _secrets(url: str) -> list[str]:
    try:
        password = make_url(url).password
    except ArgumentError:
        match = re.search(r"//[^:/@]+:([^@]*)@", url)
        return [match.group(1)] if match and match.group(1) else []
    return [password] if password else []
