"""Many workers on one pipeline: every slot finished exactly once, however workers come, go or die.

Concurrency tests run the real worker loop in separate processes with a trial of a fixed,
small amount of work (gafi_opt/fixed_work.py); one test runs real `gafi-opt worker`
processes on a tiny digits pipeline, SIGKILLs one and SIGTERMs another in mid-trial.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import threading
import time
import uuid

import optuna
import pytest
from click.testing import CliRunner
from conftest import DIGITS, tiny_overrides
from optuna.trial import TrialState

from gafi_opt.cli import main
from gafi_opt.pipeline import Pipeline
from gafi_opt.pipeline.loop import StageLoop, WorkerOptions
from gafi_opt.runner import PREPARED_ATTR, run_dir_lock, worker_plan
from gafi_opt.search.stages import STAGES
from gafi_opt.storages import open_storage, slots
from gafi_opt.storages.heartbeat import HEARTBEAT
from gafi_opt.testing.fixed_work import GRID_STAGE, FixedWork, fixed_work_spec, run_workers, start_workers

pytestmark = pytest.mark.timeout(240)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
POINTS = 16
FAST = WorkerOptions(heartbeat_interval=1, grace_period=3, poll=0.1, stages=(GRID_STAGE,))


def make_url(backend: str, request, tmp_path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'gafi.db'}"
    if backend == "journal":
        return f"journal://{tmp_path / 'gafi.log'}"
    if backend == "grpc":
        return request.getfixturevalue("grpc_proxy")[0]
    return request.getfixturevalue("postgres_url")


def new_pipeline(url: str, points: int, **spec) -> str:
    name = f"p{uuid.uuid4().hex[:8]}"
    Pipeline.create_or_load(fixed_work_spec(name, points, **spec), url)
    return name


def stage_trials(url: str, name: str, stage: str = GRID_STAGE) -> list[optuna.trial.FrozenTrial]:
    study = Pipeline.load(url, name).stage_study(stage)
    return [] if study is None else study.get_trials(deepcopy=False)


def assert_exactly_once(url: str, name: str, points: int) -> list[optuna.trial.FrozenTrial]:
    """Every grid point has exactly one finished trial, nothing is left running or waiting."""
    trials = stage_trials(url, name)
    finished = collections.Counter(t.params["checkpoint"] for t in trials if t.state in FINISHED)
    assert finished == {p: 1 for p in range(1, points + 1)}, finished
    assert [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)] == []
    assert Pipeline.load(url, name).stage_complete(GRID_STAGE)
    return trials


def running_trial_of(url: str, pid, stage_names: list[str], timeout: float = 120.0) -> optuna.trial.FrozenTrial:
    """A RUNNING trial whose heartbeat names process `pid` (or a pid for which `pid(p)` is true); waits for one."""
    accept = pid if callable(pid) else (lambda p: p == pid)
    storage = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        storage = storage or open_storage(url)
        for study_name in stage_names:
            try:
                study_id = storage.get_study_id_from_name(study_name)
            except KeyError:
                continue
            for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                beat = trial.system_attrs.get(HEARTBEAT) or {}
                if "pid" in beat and accept(beat["pid"]):
                    return trial
        time.sleep(0.05)
    raise AssertionError(f"no worker process {'matching' if callable(pid) else pid} ran a trial")


@pytest.mark.parametrize("backend,workers", [("sqlite", 8), ("postgres", 8), ("journal", 8), ("grpc", 4)])
def test_every_grid_point_finishes_exactly_once(backend, workers, request, tmp_path):
    url = make_url(backend, request, tmp_path)
    name = new_pipeline(url, POINTS)  # the stage itself is created by whichever worker gets there first
    stats = run_workers(workers, url, name, 0.05, FAST)
    trials = assert_exactly_once(url, name, POINTS)
    assert sum(s["complete"] for s in stats) == POINTS
    # The only failed trials are duplicates cancelled before running (none are expected, but any is harmless).
    assert all(t.system_attrs[slots.REASON].startswith("duplicate") for t in trials if t.state == TrialState.FAIL)
    assert len(Pipeline.load(url, name).slot_views(GRID_STAGE)) == POINTS


@pytest.mark.parametrize("backend", ["postgres", "journal"])
def test_a_killed_worker_trial_is_detected_and_rerun(backend, request, tmp_path):
    url = make_url(backend, request, tmp_path)
    name = new_pipeline(url, 4)
    processes, queue = start_workers(3, url, name, 1.5, FAST, start_in=0.3)
    victim = running_trial_of(url, processes[0].pid, [f"{name}/{GRID_STAGE}"])
    os.kill(processes[0].pid, signal.SIGKILL)
    results = [queue.get(timeout=120) for _ in processes[1:]]
    assert [status for status, _ in results] == ["ok", "ok"], results
    trials = assert_exactly_once(url, name, 4)
    killed = next(t for t in trials if t._trial_id == victim._trial_id)
    assert killed.state == TrialState.FAIL  # failed by another worker's sweep, which says why
    assert killed.system_attrs[slots.REASON].startswith(f"lost worker: its worker on {socket.gethostname()} (pid {processes[0].pid}) stopped beating")
    rerun = [t for t in trials if t.state in FINISHED and t.params["checkpoint"] == killed.system_attrs["fixed_params"]["checkpoint"]]
    assert rerun[0].number > killed.number


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_ctrl_c_fails_and_requeues_the_running_trial(signum, tmp_path):
    url = f"journal://{tmp_path / 'gafi.log'}"
    name = new_pipeline(url, 2)
    processes, queue = start_workers(1, url, name, 60.0, FAST, start_in=0.0)
    victim = running_trial_of(url, processes[0].pid, [f"{name}/{GRID_STAGE}"])
    os.kill(processes[0].pid, signum)
    status, message = queue.get(timeout=30)
    processes[0].join(timeout=10)
    assert (status, message) == ("error", f"Interrupted: {signal.Signals(signum).name}")
    trials = stage_trials(url, name)
    interrupted = next(t for t in trials if t._trial_id == victim._trial_id)
    assert interrupted.state == TrialState.FAIL
    assert interrupted.system_attrs[slots.REASON] == f"interrupted by {signal.Signals(signum).name}"
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.system_attrs[slots.SLOT] for t in waiting) == [0, 1]  # its slot re-queued, the other one untouched
    run_workers(2, url, name, 0.01, FAST)  # starting again later: the stage completes exactly once
    assert_exactly_once(url, name, 2)


def test_a_stage_whose_creator_died_is_completed(tmp_path):
    """The stage study exists with one trial enqueued, but no layout and no ready flag: its creator died."""
    url = f"sqlite:///{tmp_path / 'gafi.db'}"
    name = new_pipeline(url, 5)
    pipeline = Pipeline.load(url, name)
    study = optuna.create_study(study_name=pipeline.study_name(GRID_STAGE), storage=pipeline.storage, direction="maximize")
    slots.enqueue(pipeline.storage, study._study_id, 0, pipeline.slot_params(GRID_STAGE)[0])
    options = WorkerOptions(heartbeat_interval=1, grace_period=2, poll=0.05, ready_wait=0.5, stages=(GRID_STAGE,))
    stats = StageLoop(pipeline, FixedWork(0.0), options).run()
    assert_exactly_once(url, name, 5)
    assert stats.complete == 5


def test_a_budgeted_search_runs_exactly_its_budget(tmp_path):
    url = f"sqlite:///{tmp_path / 'gafi.db'}"
    name = new_pipeline(url, 20, search="tpe", n_trials=6)
    run_workers(2, url, name, 0.05, FAST)
    trials = stage_trials(url, name)
    assert len([t for t in trials if t.state in FINISHED]) == 6
    assert [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)] == []
    assert Pipeline.load(url, name).stage_complete(GRID_STAGE)


def test_a_point_that_keeps_failing_is_given_up_after_three_tries(tmp_path):
    url = f"sqlite:///{tmp_path / 'gafi.db'}"
    name = new_pipeline(url, 3)
    stats = StageLoop(Pipeline.load(url, name), FixedWork(0.0, nan_at=2), FAST).run()
    trials = stage_trials(url, name)
    nan = [t for t in trials if t.system_attrs["fixed_params"]["checkpoint"] == 2]
    assert [t.state for t in nan] == [TrialState.FAIL] * slots.MAX_ERRORS
    assert all(t.system_attrs[slots.REASON].startswith("nan") for t in nan)
    assert sorted(t.params["checkpoint"] for t in trials if t.state in FINISHED) == [1, 3]
    assert Pipeline.load(url, name).stage_complete(GRID_STAGE) and stats.failed == slots.MAX_ERRORS


def test_a_bare_worker_never_trains_and_says_why_it_cannot_start(tmp_path):
    url = f"sqlite:///{tmp_path / 'gafi.db'}"
    name = new_pipeline(url, 2)
    result = CliRunner().invoke(main, ["worker", "--storage", url, "--pipeline", name, "--wait-prepared", "0"])
    assert result.exit_code == 2 and "is not prepared" in result.output and "gafi-opt run STUDY" in result.output
    Pipeline.load(url, name).set_attr(PREPARED_ATTR, {"run_dir": "/elsewhere/run", "host": "other"})
    result = CliRunner().invoke(main, ["worker", "--storage", url, "--pipeline", name, "--wait-prepared", "0"])
    assert result.exit_code == 2 and "same path" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["worker", "--storage", url, "--pipeline", "nope"])
    assert result.exit_code == 2 and "no pipeline 'nope'" in result.output


def test_preparation_is_exclusive_per_run_dir(tmp_path):
    order, waited = [], []

    def hold():
        with run_dir_lock(tmp_path):
            order.append("first in")
            time.sleep(0.5)
            order.append("first out")

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.1)
    with run_dir_lock(tmp_path, waited.append):
        order.append("second in")
    holder.join()
    assert order == ["first in", "first out", "second in"] and "waiting" in waited[0]


def test_local_workers_split_the_cpu_threads():
    cores = len(os.sched_getaffinity(0))
    plan = worker_plan(3, "cpu")
    assert [p["device"] for p in plan] == ["cpu"] * 3
    assert {p["threads"] for p in plan} == {max(1, cores // 3)}
    assert {p["threads"] for p in worker_plan(3, "cpu", threads=1)} == {1}  # `run --workers 3 --threads 1`


def test_real_workers_survive_sigkill_and_sigterm(tiny_pipeline, tmp_path, capfd):
    """`run --workers 3` on a tiny digits pipeline (real `gafi-opt worker` processes): one worker is
    SIGKILLed and another SIGTERMed mid-trial; the third completes every stage, each slot exactly once."""
    import torch

    from gafi_opt.runner import prepare_once, run_processes
    from gafi_opt.spec import load_spec

    tiny_spec, _ = tiny_pipeline  # its models (filter classifier, generator checkpoints) are reused: preparing is quick
    url = f"sqlite:///{tmp_path / 'dist.db'}"
    pipeline = Pipeline.create_or_load(load_spec(DIGITS, [*tiny_overrides(tiny_spec.run_path, name="dist"), "cas.epochs=3"]), url)
    prepare_once(pipeline, torch.device("cpu"), progress=False)
    stage_names = [pipeline.study_name(stage) for stage in STAGES]
    victims = {}

    def kill_two_workers():
        try:
            victims["killed"] = running_trial_of(url, lambda pid: True, stage_names, timeout=180)
            os.kill(victims["killed"].system_attrs[HEARTBEAT]["pid"], signal.SIGKILL)
            first = victims["killed"].system_attrs[HEARTBEAT]["pid"]
            victims["stopped"] = running_trial_of(url, lambda pid: pid != first, stage_names)
            os.kill(victims["stopped"].system_attrs[HEARTBEAT]["pid"], signal.SIGTERM)
        except BaseException as exc:  # reported below, in the test's thread
            victims["error"] = exc

    killer = threading.Thread(target=kill_two_workers, daemon=True)
    killer.start()
    notes = []
    # What `gafi-opt run --workers 3 --heartbeat-interval 1 --grace-period 4` does after preparing.
    run_processes(pipeline, worker_plan(3, "cpu"), WorkerOptions(heartbeat_interval=1, grace_period=4), log=notes.append)
    killer.join(timeout=10)
    assert "error" not in victims, victims.get("error")
    err = capfd.readouterr().err  # the workers' stderr
    assert "Traceback" not in err
    assert "interrupted by SIGTERM" in err and "marked failed and re-queued" in err  # the SIGTERMed worker's one line
    assert "ended early; the others completed the pipeline" in notes[-1]
    storage = open_storage(url)
    killed, stopped = storage.get_trial(victims["killed"]._trial_id), storage.get_trial(victims["stopped"]._trial_id)
    assert killed.state == TrialState.FAIL and killed.system_attrs[slots.REASON].startswith("lost worker: ")  # another worker's sweep
    assert stopped.state == TrialState.FAIL and stopped.system_attrs[slots.REASON] == "interrupted by SIGTERM"
    pipeline = Pipeline.load(url, "dist")
    assert pipeline.current_stage() is None
    for stage in STAGES:
        trials = pipeline.stage_study(stage).get_trials(deepcopy=False)
        assert [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)] == [], stage
        slot_params = pipeline.layout(pipeline.stage_study(stage), stage)["slots"]
        finished = collections.Counter(slots.slot_of(t) for t in trials if t.state in FINISHED)
        assert finished == {slot: 1 for slot in range(len(slot_params))}, (stage, finished)
    # Starting a worker again is harmless: on a complete pipeline it exits 0 at once.
    again = CliRunner().invoke(main, ["worker", "--storage", url, "--pipeline", "dist", "--wait-prepared", "0"])
    assert again.exit_code == 0 and "complete" in again.output, again.output
