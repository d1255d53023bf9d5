"""Storages for many workers: atomic claims and test-and-set on every backend, SQLite settings, the gRPC proxy, redaction."""

from __future__ import annotations

import collections
import signal
import sqlite3
import threading
import time
import uuid

import optuna
import pytest
from conftest import free_port

from gafi_opt.errors import GafiError
from gafi_opt.storages import TAS_PREFIX, _grpc, _rdb, open_storage, redact, redact_text, scrub, set_once
from gafi_opt.testing import fixed_work

pytestmark = pytest.mark.timeout(120)
RACERS = 4


@pytest.fixture(params=["sqlite", "postgres", "journal"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gafi.db'}"
    if request.param == "journal":
        return f"journal://{tmp_path / 'gafi.log'}"
    return request.getfixturevalue("postgres_url")


def race(kind, url, study_id, keys=()):
    return fixed_work.race(kind, url, study_id, RACERS, list(keys))


def test_claims_and_set_once_have_one_winner(url):
    """Processes race to claim the same WAITING trials and to set the same attrs once: one winner each.

    (Optuna's stock RDBStorage on SQLite fails the first half: benchmarks/storage_bench.py counts it.)
    """
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name=f"race-{uuid.uuid4().hex[:6]}")
    for i in range(40):
        study.enqueue_trial({"x": i})
    keys = [f"{TAS_PREFIX}k{i}" for i in range(15)]
    claims = collections.Counter(trial_id for won in race("claim", url, study._study_id) for trial_id in won)
    assert len(claims) == 40 and max(claims.values()) == 1, [t for t, n in claims.items() if n > 1]
    wins = collections.Counter(key for won in race("set_once", url, study._study_id, keys) for key in won)
    assert wins == {key: 1 for key in keys}
    # The first value stays: a later writer neither wins nor overwrites.
    assert not set_once(storage, study._study_id, keys[0], "late")
    assert storage.get_study_system_attrs(study._study_id)[keys[0]] != "late"


def test_test_and_set_through_the_grpc_proxy(grpc_proxy):
    url, _ = grpc_proxy
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="tas-grpc")
    keys = [f"{TAS_PREFIX}k{i}" for i in range(10)]
    wins = collections.Counter(key for won in race("tas", url, study._study_id, keys) for key in won)
    assert wins == {key: 1 for key in keys}
    study.enqueue_trial({"x": 1})
    claims = collections.Counter(t for won in race("claim", url, study._study_id) for t in won)
    assert list(claims.values()) == [1]


def test_a_plain_optuna_grpc_proxy_is_refused(tmp_path):
    """Optuna's own proxy overwrites attrs; claims through it would not be exclusive, so workers refuse it."""
    port = free_port()
    plain = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'plain.db'}")
    from optuna.storages._grpc.server import make_server  # what run_grpc_proxy_server serves, minus its blocking wait

    server = make_server(plain, "127.0.0.1", port)
    server.start()
    try:
        storage = open_storage(f"grpc://127.0.0.1:{port}")
        study = optuna.create_study(storage=storage, study_name="plain")
        with pytest.raises(GafiError, match="overwrites attributes"):
            set_once(storage, study._study_id, TAS_PREFIX + "x", "v")
    finally:
        server.stop(0)


def test_storage_proxy_command_stops_cleanly(grpc_proxy):
    url, process = grpc_proxy
    assert optuna.create_study(storage=open_storage(url), study_name="s").study_name == "s"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    stderr = process.stderr.read()
    assert "listening on 127.0.0.1" in stderr and "stopped" in stderr and "Traceback" not in stderr


def test_no_proxy_listening_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_grpc, "GRPC_CONNECT_TIMEOUT_S", 1)
    with pytest.raises(GafiError, match=r"no gRPC storage proxy answers at 127\.0\.0\.1:\d+ \(start one with `gafi-opt storage-proxy`\)"):
        open_storage(f"grpc://127.0.0.1:{free_port()}")


def test_sqlite_uses_wal_and_a_busy_timeout(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'g.db'}")
    with storage.rdb.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == _rdb.SQLITE_BUSY_TIMEOUT_S * 1000


def test_sqlite_lock_held_longer_than_the_busy_timeout_is_retried(tmp_path, monkeypatch):
    """'database is locked' never reaches the caller: the write waits, then is retried until the lock goes."""
    monkeypatch.setattr(_rdb, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "locked.db"
    storage = open_storage(f"sqlite:///{path}")
    study = optuna.create_study(storage=storage, study_name="locked")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.5, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    study.set_user_attr("written", True)  # blocked for 1.5 s, far past the 0.2 s busy timeout
    assert time.monotonic() - started >= 1.2
    assert study.user_attrs["written"] is True
    release.join()
    holder.close()


def test_in_memory_sqlite_is_refused():
    with pytest.raises(GafiError, match="in-memory SQLite"):
        open_storage("sqlite:///:memory:")


def test_passwords_are_redacted_everywhere():
    url = "postgresql+psycopg://alice:hunter2@db.example:5432/gafi"
    assert redact(url) == "postgresql+psycopg://alice:***@db.example:5432/gafi"
    assert "hunter2" not in redact_text(f"could not connect with {url}: timeout")
    assert "hunter2" not in scrub("password hunter2 rejected", url)
    assert redact("sqlite:///runs/x.db") == "sqlite:///runs/x.db"


def test_an_unreachable_database_error_hides_the_password():
    with pytest.raises(GafiError) as error:
        open_storage(f"postgresql+psycopg://alice:hunter2@127.0.0.1:{free_port()}/nowhere")
    assert "hunter2" not in str(error.value)
    assert "alice:***@127.0.0.1" in str(error.value)


def test_the_stored_spec_keeps_no_password(postgres_url):
    """A password in the study's storage URL is not copied into the storage (dashboards, exports show it)."""
    from click.testing import CliRunner

    from gafi_opt.cli import main
    from gafi_opt.pipeline.store import SPEC_ATTR, Pipeline
    from gafi_opt.testing.fixed_work import fixed_work_spec

    with_password = postgres_url.replace("@", ":hunter2@", 1)  # trust auth: any password is accepted
    pipeline = Pipeline.create_or_load(fixed_work_spec("secret", 2, storage=with_password), with_password)
    assert "hunter2" not in pipeline.attrs()[SPEC_ATTR]
    Pipeline.create_or_load(fixed_work_spec("secret", 2, storage=with_password), with_password)  # reopens: same spec
    for command in (["status"], ["export", "--format", "json"]):
        result = CliRunner().invoke(main, [*command, "--storage", with_password, "--pipeline", "secret"])
        assert "hunter2" not in result.output
    result = CliRunner().invoke(main, ["status", "--storage", with_password.rsplit("/", 1)[0] + "/no_such_db"])
    assert result.exit_code == 2 and "hunter2" not in result.output and "***" in result.output
