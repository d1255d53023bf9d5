"""Opening Optuna storages from URLs, with errors that name the problem and hide credentials.

- `sqlite:///path.db`: one machine; opened with a busy timeout so concurrent workers wait
  for the lock instead of failing.
- `postgresql+psycopg://user:pass@host/db` (any SQLAlchemy URL): many machines.
- `journal:///path/to/file.log` (or a path ending in .log/.jsonl): Optuna's journal file.
- `grpc://host:port`: Optuna's gRPC storage proxy (see `gafi-opt storage-proxy`).
"""

from __future__ import annotations

import re
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from gafi_opt.errors import GafiError

SQLITE_BUSY_TIMEOUT_S = 60


def redact(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs, errors and exports."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`, or a GafiError with the (redacted) URL and the reason."""
    try:
        if url.startswith("journal://") or url.endswith((".log", ".jsonl")):
            return _journal(url)
        if url.startswith("grpc://"):
            host, _, port = url.removeprefix("grpc://").partition(":")
            return optuna.storages.GrpcStorageProxy(host=host or "localhost", port=int(port or 13000))
        return _rdb(url)
    except GafiError:
        raise
    except Exception as exc:
        message = " ".join(str(exc).split())
        for secret in _secrets(url):
            message = message.replace(secret, "***")
        raise GafiError(f"cannot open storage {redact(url)}: {message[:300]}") from None


def _rdb(url: str) -> optuna.storages.RDBStorage:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise GafiError(f"not a storage URL: {redact(url)} (expected sqlite:///..., postgresql+psycopg://..., journal:///... or grpc://host:port)") from None
    engine_kwargs: dict = {}
    heartbeat = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)


def _journal(url: str) -> optuna.storages.JournalStorage:
    path = Path(url.removeprefix("journal://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _secrets(url: str) -> list[str]:
    try:
        password = make_url(url).password
    except ArgumentError:
        return []
    return [password] if password else []
