"""Storage faults under running workers: a database that blinks or stays away, a storage file deleted,
moved or replaced, and what a worker says it recovered.

Real PostgreSQL (tests/conftest.py's postgres_url) and real worker processes: fixed-work trials
(gafi_opt/testing/fixed_work.py) for timing-controlled stages, `gafi-opt run`/`gafi-opt worker` on a
tiny digits pipeline for what a user sees. One test restarts the whole server for a few seconds
(pg_ctlcluster); the others only close the test's own database to connections.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import psycopg
import pytest
import sqlalchemy
from conftest import DIGITS, ROOT, free_port, tiny_overrides
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from test_distributed import FINISHED, assert_exactly_once, running_trial_of, stage_trials

from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline, StageLoop, WorkerOptions
from gafi_opt.search.stages import STAGES
from gafi_opt.storages import open_storage, slots
from gafi_opt.storages.heartbeat import Heartbeat, StaleDetector
from gafi_opt.storages.outage import StorageUnreachable, is_locked, unreachable_reason
from gafi_opt.testing.fixed_work import GRID_STAGE, FixedWork, fixed_work_spec, run_workers, start_workers

pytestmark = pytest.mark.timeout(240)
FAST = WorkerOptions(heartbeat_interval=1, grace_period=3, poll=0.1, stages=(GRID_STAGE,))


def new_pipeline(url: str, points: int) -> str:
    name = f"f{uuid.uuid4().hex[:8]}"
    Pipeline.create_or_load(fixed_work_spec(name, points), url)
    return name


def with_password(url: str) -> str:
    return url.replace("@", ":hunter2@", 1)  # trust auth: any password is accepted, and must never be shown


def admin(url: str) -> psycopg.Connection:
    parsed = make_url(url)
    return psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username, dbname="postgres", autocommit=True)


@contextlib.contextmanager
def database_closed(url: str):
    """The test's own database refuses connections and its sessions are cut, until the block ends."""
    name = make_url(url).database
    with admin(url) as connection:
        connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            yield
        finally:
            connection.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def reopen_later(url: str, seconds: float) -> threading.Timer:
    def reopen():
        with admin(url) as connection:
            connection.execute(f'ALTER DATABASE "{make_url(url).database}" ALLOW_CONNECTIONS true')

    timer = threading.Timer(seconds, reopen)
    timer.start()
    return timer


def wait_for_exit(processes, timeout: float = 120.0) -> list[int]:
    for process in processes:
        process.join(timeout=timeout)
    return [process.exitcode for process in processes]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# ---------------------------------------------------------------- which errors are an outage


def test_an_outage_is_told_from_a_mistake_by_real_driver_errors(postgres_url):
    port = free_port()
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="x", connect_timeout=5)
    assert unreachable_reason(refused.value) == "connection refused"
    with pytest.raises(sqlalchemy.exc.OperationalError) as wrapped:
        sqlalchemy.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x").connect()
    assert unreachable_reason(wrapped.value) == "connection refused"
    # Mistakes fail at once: a database that does not exist, a bad query.
    with pytest.raises(sqlalchemy.exc.OperationalError) as typo:
        sqlalchemy.create_engine(make_url(postgres_url).set(database="no_such_database")).connect()
    assert unreachable_reason(typo.value) is None
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as connection, pytest.raises(sqlalchemy.exc.ProgrammingError) as bad_query:
        connection.execute(sqlalchemy.text("SELECT * FROM no_such_table"))
    assert unreachable_reason(bad_query.value) is None and not is_locked(bad_query.value)
    engine.dispose()


def test_a_closed_database_and_cut_sessions_are_an_outage_through_optuna(postgres_url):
    engine = sqlalchemy.create_engine(postgres_url)
    held = engine.connect()
    held.execute(sqlalchemy.text("SELECT 1"))
    rdb = optuna.storages.RDBStorage(postgres_url)
    rdb.get_all_studies()  # a pooled connection, cut below
    with database_closed(postgres_url):
        with pytest.raises(sqlalchemy.exc.OperationalError) as cut:
            held.execute(sqlalchemy.text("SELECT 1"))
        assert unreachable_reason(cut.value) == "terminating connection due to administrator command" and cut.value.connection_invalidated
        with pytest.raises(sqlalchemy.exc.OperationalError) as closed:
            engine.connect()
        assert unreachable_reason(closed.value) == "is not currently accepting connections"
        with pytest.raises(optuna.exceptions.StorageInternalError) as through_optuna:
            rdb.get_all_studies()
        assert unreachable_reason(through_optuna.value) is not None
    held.close()
    engine.dispose()
    rdb.engine.dispose()


def test_a_sqlite_lock_is_retried_but_is_no_outage(tmp_path):
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(sqlite3.OperationalError) as locked:
        sqlite3.connect(path, timeout=0).execute("INSERT INTO t VALUES (1)")
    holder.close()
    assert is_locked(locked.value) and unreachable_reason(locked.value) is None


def test_a_storage_rides_out_a_closed_database_and_says_so_once(postgres_url):
    url = with_password(postgres_url)
    storage = open_storage(url)
    said = []
    storage.outage.say = said.append
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "blink")
    with database_closed(postgres_url):
        reopen = reopen_later(postgres_url, 1.5)  # the block's own ALTER at exit is then a no-op
        assert storage.get_study_name_from_id(study_id) == "blink"  # waited, then answered
    reopen.join()
    assert len(said) == 2, said
    assert said[0].startswith(f"the storage at {postgres_url.replace('@', ':***@', 1)} is unreachable (")
    assert said[0].endswith("); retrying for up to 60 s") and said[1].startswith("the storage at ") and " is back after " in said[1]
    assert storage.outage.back_at is not None
    storage.outage.limit = 1
    with database_closed(postgres_url), pytest.raises(StorageUnreachable) as gave_up:
        storage.get_study_name_from_id(study_id)
    assert "stayed unreachable (" in str(gave_up.value) and "(--storage-outage 1)" in str(gave_up.value)
    assert "hunter2" not in str(gave_up.value) + " ".join(said) and ":***@" in str(gave_up.value)
    assert storage.get_study_name_from_id(study_id) == "blink"  # and works again once it is back


def test_a_storage_that_is_down_when_opened_fails_at_once():
    """A mistyped host or port must not hang a command for the outage limit."""
    port = free_port()
    with pytest.raises(GafiError) as error:
        open_storage(f"postgresql+psycopg://alice:hunter2@127.0.0.1:{port}/x")
    assert str(error.value) == f"cannot open storage postgresql+psycopg://alice:***@127.0.0.1:{port}/x: it is unreachable (connection refused)"


def test_a_sweeper_that_waited_out_an_outage_gives_running_trials_a_full_grace_period(postgres_url):
    """Optuna's heartbeat table uses the database's clock, which runs on through an outage; no
    heartbeat can get through meanwhile, so the outage must not count against a trial."""
    storage = open_storage(postgres_url)
    study = optuna.create_study(storage=storage, study_name=f"grace-{uuid.uuid4().hex[:6]}", direction="maximize")
    storage.configure_heartbeat(1, 2)
    study.enqueue_trial({"x": 1})
    trial = slots.claim(storage, study._study_id)
    with Heartbeat(storage, trial.trial_id, 0.5):  # one beat, then silence
        pass
    time.sleep(2.5)  # older than the grace period by the database's clock
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert [t.number for t in StaleDetector(2).stale(study, running)] == [0]  # the rule can fail a trial
    with database_closed(postgres_url):
        reopen = reopen_later(postgres_url, 1.0)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))  # waits for the database
    reopen.join()
    assert storage.outage.back_at is not None
    assert StaleDetector(2).stale(study, running) == []  # a fresh grace period from the moment it came back


# ---------------------------------------------------------------- workers through an outage


@pytest.mark.timeout(300)
def test_two_workers_ride_out_a_server_restart_without_losing_a_trial(postgres_url, tmp_path):
    """PostgreSQL is stopped for about 3 s while two workers are mid-trial: both wait, both finish
    their trials once it is back, every point finishes exactly once, and no trial is failed as lost."""
    if not shutil.which("pg_ctlcluster") or not Path("/etc/postgresql").is_dir() or make_url(postgres_url).host not in ("127.0.0.1", "localhost"):
        pytest.skip("needs the local PostgreSQL cluster (pg_ctlcluster) to restart it")
    version = max(Path("/etc/postgresql").iterdir()).name
    points = 6
    name = new_pipeline(postgres_url, points)
    processes, queue = start_workers(2, postgres_url, name, 2.0, FAST, start_in=0.3, stderr_dir=tmp_path)
    for process in processes:
        running_trial_of(postgres_url, process.pid, [f"{name}/{GRID_STAGE}"])
    control = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]
    try:
        subprocess.run([*control, "stop"], check=True, capture_output=True, timeout=60)
        time.sleep(3)
    finally:
        subprocess.run([*control, "start"], check=True, capture_output=True, timeout=60)
    results = [queue.get(timeout=180) for _ in processes]
    assert wait_for_exit(processes) == [0, 0] and [status for status, _ in results] == ["ok", "ok"], results
    trials = assert_exactly_once(postgres_url, name, points)
    assert [t.number for t in trials if t.state == TrialState.FAIL] == []  # nothing failed as lost, nothing re-run
    assert sum(stats["complete"] for _, stats in results) == points
    assert sum(stats["lost"] + stats["stale_failed"] for _, stats in results) == 0
    for i in range(2):
        said = lines(tmp_path / f"worker-{i}.err")
        assert any(" is unreachable (" in line and "retrying for up to 60 s" in line for line in said), said
        assert any(" is back after " in line for line in said), said
        assert not any("Traceback" in line for line in said), said


def test_a_worker_gives_up_after_its_outage_limit_and_the_next_one_recovers(postgres_url, tmp_path):
    url = with_password(postgres_url)
    points = 3
    name = new_pipeline(url, points)
    options = WorkerOptions(heartbeat_interval=1, grace_period=3, poll=0.1, stages=(GRID_STAGE,), storage_outage=3)
    processes, queue = start_workers(1, url, name, 5.0, options, start_in=0.3, stderr_dir=tmp_path)
    victim = running_trial_of(url, processes[0].pid, [f"{name}/{GRID_STAGE}"])
    with database_closed(postgres_url):
        status, message = queue.get(timeout=120)
        assert wait_for_exit(processes) == [2]
    assert status == "error" and message.startswith("StorageUnreachable: the storage at postgresql+psycopg://postgres:***@"), message
    assert "stayed unreachable (" in message and "(--storage-outage 3)" in message and "hunter2" not in message
    said = lines(tmp_path / "worker-0.err")
    assert len(said) == 1 and said[0].endswith("; retrying for up to 3 s") and "hunter2" not in said[0], said  # no traceback, no heartbeat noise
    assert open_storage(url).get_trial(victim._trial_id).state == TrialState.RUNNING  # left for the heartbeat sweep
    stats = run_workers(1, url, name, 0.05, FAST)
    trials = assert_exactly_once(url, name, points)
    abandoned = next(t for t in trials if t._trial_id == victim._trial_id)
    assert abandoned.state == TrialState.FAIL and abandoned.system_attrs[slots.REASON].startswith("lost worker: ")
    assert stats[0]["stale_failed"] == 1


# ---------------------------------------------------------------- the storage file swapped under a worker


@pytest.mark.parametrize(
    "backend,fate", [("sqlite", "deleted"), ("sqlite", "replaced"), ("sqlite", "moved"), ("journal", "deleted"), ("journal", "replaced")]
)
def test_a_worker_stops_when_its_storage_file_is_swapped(backend, fate, tmp_path):
    path = tmp_path / ("gafi.db" if backend == "sqlite" else "gafi.log")
    url = f"sqlite:///{path}" if backend == "sqlite" else f"journal://{path}"
    points = 3
    name = new_pipeline(url, points)
    processes, queue = start_workers(1, url, name, 2.0, FAST, start_in=0.3, stderr_dir=tmp_path)
    running_trial_of(url, processes[0].pid, [f"{name}/{GRID_STAGE}"])
    other = tmp_path / "other" / path.name
    other.parent.mkdir()
    replacement = None
    if fate == "deleted":
        path.unlink()
    elif fate == "moved":
        path.rename(other)
    else:
        if backend == "sqlite":
            with contextlib.closing(sqlite3.connect(other)) as connection, connection:
                connection.execute("CREATE TABLE unrelated (x)")
        else:
            other.write_text("")
        replacement = other.read_bytes()
        os.replace(other, path)
    status, message = queue.get(timeout=60)
    assert wait_for_exit(processes) == [2]
    said = {"deleted": "deleted", "moved": f"moved to {other}", "replaced": "replaced by another file"}[fate]
    if backend == "journal" and fate == "deleted":
        said = "deleted or moved away"  # the journal holds no open descriptor to tell which
    assert status == "error" and message.startswith(f"StorageLost: the storage file {path} was {said} while this process used it: stopped"), message
    assert ("move it back" in message) == (fate == "moved" or said == "deleted or moved away"), message
    assert not any("Traceback" in line for line in lines(tmp_path / "worker-0.err"))
    if fate == "replaced":
        assert path.read_bytes() == replacement  # nothing was written to the new file
    else:
        assert not path.exists()  # no new, empty storage was made in its place
    if fate == "moved":  # moved back, the next worker finishes the stage: nothing that finished is lost
        other.rename(path)
        run_workers(1, url, name, 0.05, FAST)
        trials = assert_exactly_once(url, name, points)
        assert [t.system_attrs[slots.REASON][:12] for t in trials if t.state == TrialState.FAIL] == ["lost worker:"]


# ---------------------------------------------------------------- what a worker says it recovered


def test_a_worker_counts_the_trials_it_recovered_from_lost_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'gafi.db'}"
    name = new_pipeline(url, 4)
    processes, _ = start_workers(2, url, name, 60.0, FAST, start_in=0.3)
    victims = [running_trial_of(url, process.pid, [f"{name}/{GRID_STAGE}"]) for process in processes]
    for process in processes:
        os.kill(process.pid, signal.SIGKILL)
    stats = StageLoop(Pipeline.load(url, name), FixedWork(0.0), FAST).run()
    assert stats.stale_failed == 2 and stats.complete == 4
    trials = assert_exactly_once(url, name, 4)
    failed = {t._trial_id: t.system_attrs[slots.REASON] for t in trials if t.state == TrialState.FAIL}
    assert sorted(failed) == sorted(v._trial_id for v in victims) and all(r.startswith("lost worker: ") for r in failed.values())


# ---------------------------------------------------------------- what a user sees: `gafi-opt run` and `gafi-opt worker`


def gafi_opt(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gafi_opt.cli", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def tiny_run(tiny_pipeline, name: str, storage: str, *options: str, overrides: tuple[str, ...] = ()) -> tuple[subprocess.Popen, list[str]]:
    """`gafi-opt run` of the tiny digits pipeline under a new name (its models are reused: preparing is quick)."""
    tiny_spec, _ = tiny_pipeline
    overrides = [*tiny_overrides(tiny_spec.run_path, name=name), "cas.epochs=4", *overrides]
    process = gafi_opt("run", str(DIGITS), "--quiet", "--storage", storage, "--heartbeat-interval", "1", "--grace-period", "2", *options,
                       *[arg for o in overrides for arg in ("--set", o)])  # fmt: skip
    return process, [f"{name}/{stage}" for stage in STAGES]


def test_run_stops_in_one_line_when_its_sqlite_file_is_deleted(tiny_pipeline, tmp_path):
    path = tmp_path / "gafi.db"
    process, studies = tiny_run(tiny_pipeline, "deleted", f"sqlite:///{path}")
    try:
        running_trial_of(f"sqlite:///{path}", process.pid, studies)
        path.unlink()
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 2, stderr
    expected = f"gafi-opt: error: the storage file {path} was deleted while this process used it: stopped, so that nothing is written where no one will read it"
    assert stderr.splitlines() == [expected]
    assert not path.exists()


def test_run_gives_up_after_its_outage_limit_and_a_worker_finishes_the_pipeline(tiny_pipeline, postgres_url):
    url = with_password(postgres_url)
    one_point = ("stddev.values=[1.0]", "threshold.values=[0.0]", "final.seeds=1")  # the worker's part stays short
    process, studies = tiny_run(tiny_pipeline, "outage", url, "--storage-outage", "3", overrides=one_point)
    try:
        victim = running_trial_of(url, process.pid, studies)
        with database_closed(postgres_url):
            _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    said = stderr.splitlines()
    assert process.returncode == 2, stderr
    assert len(said) == 2 and said[0].endswith("; retrying for up to 3 s") and said[1].startswith("gafi-opt: error: the storage at "), said
    assert "stayed unreachable (" in said[1] and "hunter2" not in stderr and ":***@" in said[1]
    assert open_storage(url).get_trial(victim._trial_id).state == TrialState.RUNNING
    worker = gafi_opt("worker", "--storage", url, "--pipeline", "outage", "--heartbeat-interval", "1", "--grace-period", "2")
    _, stderr = worker.communicate(timeout=180)
    assert worker.returncode == 0, stderr
    assert "finished" in stderr and "recovered 1 from lost workers" in stderr, stderr
    pipeline = Pipeline.load(url, "outage")
    assert pipeline.current_stage() is None
    abandoned = open_storage(url).get_trial(victim._trial_id)
    assert abandoned.state == TrialState.FAIL and abandoned.system_attrs[slots.REASON].startswith("lost worker: ")
    for stage in STAGES:
        trials = stage_trials(url, "outage", stage)
        assert [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)] == [], stage
        finished = [slots.slot_of(t) for t in trials if t.state in FINISHED]
        assert sorted(finished) == list(range(len(pipeline.layout(pipeline.stage_study(stage), stage)["slots"]))), (stage, finished)
