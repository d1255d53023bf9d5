"""Opening an Optuna storage from a URL, once, at the edge of a command.

Every storage opened here carries its URL (`storage.url`), so that the code below the command can name
it (redacted) in messages and hand it to worker processes without opening it again.
"""

from __future__ import annotations

from optuna.storages import BaseStorage

from gafi_opt.errors import GafiError, one_line
from gafi_opt.storages._grpc import open_grpc
from gafi_opt.storages._journal import open_journal
from gafi_opt.storages._rdb import open_rdb
from gafi_opt.storages.urls import is_journal, local_file, password_has_at, redact, scrub


def open_storage(url: "str | BaseStorage", must_exist: bool = False) -> BaseStorage:
    """An Optuna storage for `url` (a storage this function opened is returned as it is), or a GafiError
    with the (redacted) URL and the reason.

    `must_exist` (commands that only read: status, export, dashboard, a worker joining): a SQLite
    or journal file that is not there is an error, rather than a new empty storage made by a typo.
    """
    if isinstance(url, BaseStorage):
        if not hasattr(url, "url"):
            raise GafiError(f"{type(url).__name__} is not a gafi-opt storage: open it with gafi_opt.storages.open_storage(URL)")
        return url
    if password_has_at(url):
        raise GafiError(f"the password in {redact(url)} holds an '@': write it as %40, or the rest is taken for the host")
    if must_exist:
        path = local_file(url)
        if path is not None and not path.exists():
            raise GafiError(f"no storage at {path}: nothing has been run there (check the path; `gafi-opt run` creates it)")
    try:
        if is_journal(url):
            storage = open_journal(url)
        elif url.startswith("grpc://"):
            storage = open_grpc(url)
        else:
            storage = open_rdb(url)
    except GafiError:
        raise
    except Exception as exc:
        raise GafiError(f"cannot open storage {redact(url)}: {scrub(one_line(exc), url)}") from None
    storage.url = url
    return storage


def storage_name(storage: BaseStorage) -> str:
    """The storage's URL with any password hidden: how messages name it."""
    return redact(getattr(storage, "url", type(storage).__name__))
