"""The journal file is locked the way Optuna's own clients lock it, so optuna-dashboard or Optuna's CLI writing
while gafi-opt's workers run cannot corrupt it; a lock left by a killed gafi-opt writer stalls no one."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
import warnings

import optuna
import optuna_dashboard
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalFileSymlinkLock
from optuna.trial import TrialState

from gafi_opt.pipeline import Pipeline, WorkerOptions
from gafi_opt.storages import open_storage
from gafi_opt.storages._journal import OWNER_TAG, JournalLock
from gafi_opt.testing.fixed_work import GRID_STAGE, fixed_work_spec, start_workers

pytestmark = pytest.mark.timeout(240)
BLOCKED_LONG_ENOUGH_S = 1.0  # how long a blocked writer is given to (wrongly) get through
FAST = WorkerOptions(heartbeat_interval=1, grace_period=3, poll=0.1, stages=(GRID_STAGE,))


def plain_optuna(path) -> JournalStorage:
    """What Optuna's CLI and optuna-dashboard open for a journal file: the default lock."""
    return JournalStorage(JournalFileBackend(str(path)))


def log_lines(path) -> list[dict]:
    """Every line of the journal, parsed: a torn or interleaved append fails here."""
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def write_in_thread(write) -> threading.Thread:
    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_the_lock_file_is_optunas():
    path = "/shared/x/gafi.log"
    assert JournalLock(path).lock_path == JournalFileOpenLock(path)._lock_file == JournalFileSymlinkLock(path)._lock_file


def test_a_gafi_opt_writer_holds_off_optunas_own_client(tmp_path):
    path = tmp_path / "gafi.log"
    ours = open_storage(f"journal://{path}")
    study_id = ours.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    theirs = plain_optuna(path)
    lock = JournalLock(str(path))
    lock.acquire()
    try:
        writer = write_in_thread(lambda: theirs.set_study_user_attr(study_id, "from_optuna", 1))
        writer.join(BLOCKED_LONG_ENOUGH_S)
        assert writer.is_alive()  # waiting for gafi-opt's lock
        assert "from_optuna" not in plain_optuna(path).get_study_user_attrs(study_id)
    finally:
        lock.release()
    writer.join(60)
    assert not writer.is_alive() and ours.get_study_user_attrs(study_id) == {"from_optuna": 1}
    assert not os.path.lexists(lock.lock_path)


@pytest.mark.parametrize("optuna_lock", [JournalFileSymlinkLock, JournalFileOpenLock])
def test_optunas_client_holds_off_a_gafi_opt_writer(optuna_lock, tmp_path):
    path = tmp_path / "gafi.log"
    ours = open_storage(f"journal://{path}")
    study_id = ours.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    theirs = optuna_lock(str(path))
    theirs.acquire()  # as Optuna's JournalFileBackend does around an append
    try:
        writer = write_in_thread(lambda: ours.set_study_user_attr(study_id, "from_gafi", 1))
        writer.join(BLOCKED_LONG_ENOUGH_S)
        assert writer.is_alive()
        assert "from_gafi" not in plain_optuna(path).get_study_user_attrs(study_id)
    finally:
        theirs.release()
    writer.join(60)
    assert not writer.is_alive() and plain_optuna(path).get_study_user_attrs(study_id) == {"from_gafi": 1}


HOLD_AND_DIE = """
import os, signal, sys
from gafi_opt.storages._journal import JournalLock
JournalLock(sys.argv[1]).acquire()
print("holding", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_lock_left_by_a_killed_gafi_opt_writer_is_broken_at_once(tmp_path):
    path = tmp_path / "gafi.log"
    plain_optuna(path)  # creates the file
    died = subprocess.run([sys.executable, "-c", HOLD_AND_DIE, str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert died.returncode == -signal.SIGKILL and died.stdout == "holding\n", died.stderr
    with open(path.with_name("gafi.log.lock")) as left:
        assert left.read().startswith(OWNER_TAG)  # the dead writer's lock file is still there
    # No grace period at all: only knowing the holder is dead can get this lock.
    lock = JournalLock(str(path), grace_period=None)
    taker = write_in_thread(lambda: (lock.acquire(), lock.release()))
    taker.join(60)
    assert not taker.is_alive()


def test_a_lock_left_by_a_killed_optuna_client_is_broken_after_its_grace_period(tmp_path):
    path = tmp_path / "gafi.log"
    plain_optuna(path)
    JournalFileSymlinkLock(str(path)).acquire()  # and never released: its client died
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna warns that a grace period of 1 s is short
        lock = JournalLock(str(path), grace_period=1)
    lock.acquire()
    try:
        assert not os.path.islink(lock.lock_path)  # ours now, a file with our name in it
        with open(lock.lock_path) as held:
            assert held.read().startswith(OWNER_TAG)
    finally:
        lock.release()


# A plain Optuna client, as optuna-dashboard or a script would be: user attrs and notes on a study, until told to stop.
OPTUNA_CLIENT = """
import os, sys
import optuna, optuna_dashboard
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

path, study_name, stop = sys.argv[1:]
study = optuna.load_study(study_name=study_name, storage=JournalStorage(JournalFileBackend(path)))
written = 0
while written < 20 or (not os.path.exists(stop) and written < 2000):
    study.set_user_attr(f"client_{written}", written)
    if written % 10 == 0:
        optuna_dashboard.save_note(study, f"note {written}")
    written += 1
print(written, flush=True)
"""


def test_workers_and_a_plain_optuna_client_write_one_journal_together(tmp_path):
    """gafi-opt workers run a grid stage while Optuna's own client writes attrs and notes; the log replays whole."""
    path = tmp_path / "gafi.log"
    url = f"journal://{path}"
    name = f"p{uuid.uuid4().hex[:8]}"
    Pipeline.create_or_load(fixed_work_spec(name, 16), url)
    stop = tmp_path / "stop"
    client = subprocess.Popen([sys.executable, "-c", OPTUNA_CLIENT, str(path), name, str(stop)], stdout=subprocess.PIPE, text=True)
    processes, queue = start_workers(3, url, name, 0.05, FAST, start_in=0.5)
    try:
        results = [queue.get(timeout=180) for _ in processes]
    finally:
        stop.touch()
        for process in processes:
            process.join(timeout=10)
    written = int(client.communicate(timeout=120)[0])
    assert client.returncode == 0 and [status for status, _ in results] == ["ok"] * 3, results
    assert len(log_lines(path)) > 0  # every line of the log parses
    assert not os.path.lexists(f"{path}.lock")
    fresh = plain_optuna(path)  # a fresh client replays the whole log
    replayed = optuna.load_study(study_name=name, storage=fresh)
    assert {f"client_{i}": i for i in range(written)}.items() <= replayed.user_attrs.items()
    assert optuna_dashboard.get_note(replayed) == f"note {(written - 1) // 10 * 10}"
    stage = optuna.load_study(study_name=f"{name}/{GRID_STAGE}", storage=fresh)
    finished = collections.Counter(t.params["checkpoint"] for t in stage.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    assert finished == {point: 1 for point in range(1, 17)}  # every grid point exactly once
    assert not [t for t in stage.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
