"""Many workers on one pipeline: every slot finished exactly once, however workers come, go or die.

Concurrency tests run the real worker loop in separate processes with a trial of a fixed,
small amount of work (gafi_opt/fixed_work.py); one test runs real `gafi-opt worker`
processes on a tiny digits pipeline, SIGKILLs one and SIGTERMs another in mid-trial.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from gafi_opt import slots
from gafi_opt.cli import main
from gafi_opt.distributed import StageLoop, WorkerOptions
from gafi_opt.fixed_work import GRID_STAGE, FixedWork, fixed_work_spec, run_workers, start_workers
from gafi_opt.heartbeat import HEARTBEAT
from gafi_opt.launch import PREPARED_ATTR, run_dir_lock, worker_plan
from gafi_opt.pipeline import Pipeline
from gafi_opt.stages import STAGES
from gafi_opt.storage import open_storage

from conftest import DIGITS, ROOT, tiny_overrides

pytestmark = pytest.mark.timeout(240)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
POINTS = 24
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


def running_trial_of(url: str, pid: int, stage_names: list[str], timeout: float = 120.0) -> optuna.trial.FrozenTrial:
    """The RUNNING trial whose heartbeat says process `pid` runs it (waits for one)."""
    storage = open_storage(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for study_name in stage_names:
            try:
                study_id = storage.get_study_id_from_name(study_name)
            except KeyError:
                continue
            for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                if (trial.system_attrs.get(HEARTBEAT) or {}).get("pid") == pid:
                    return trial
        time.sleep(0.05)
    raise AssertionError(f"process {pid} never ran a trial")


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
    assert killed.state == TrialState.FAIL and slots.REASON not in killed.system_attrs  # failed by the sweep, not by itself
    rerun = [t for t in trials if t.state in FINISHED and t.params["checkpoint"] == killed.system_attrs["fixed_params"]["checkpoint"]]
    assert rerun[0].number > killed.number


def test_sigterm_fails_and_requeues_the_running_trial(tmp_path):
    url = f"journal://{tmp_path / 'gafi.log'}"
    name = new_pipeline(url, 2)
    processes, queue = start_workers(1, url, name, 60.0, FAST, start_in=0.0)
    victim = running_trial_of(url, processes[0].pid, [f"{name}/{GRID_STAGE}"])
    os.kill(processes[0].pid, signal.SIGTERM)
    status, message = queue.get(timeout=30)
    processes[0].join(timeout=10)
    assert (status, message) == ("error", "Interrupted: SIGTERM")
    trials = stage_trials(url, name)
    interrupted = next(t for t in trials if t._trial_id == victim._trial_id)
    assert interrupted.state == TrialState.FAIL
    assert interrupted.system_attrs[slots.REASON] == "interrupted by SIGTERM"
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
    slots.enqueue(pipeline.storage, study._study_id, 0, {"checkpoint": 1})
    options = WorkerOptions(heartbeat_interval=1, grace_period=2, poll=0.05, ready_wait=0.5, stages=(GRID_STAGE,))
    stats = StageLoop(pipeline, FixedWork(0.0), options).run()
    assert_exactly_once(url, name, 5)
    assert stats.complete == 5


def test_a_budgeted_search_runs_exactly_its_budget(tmp_path):
    url = f"sqlite:///{tmp_path / 'gafi.db'}"
    name = new_pipeline(url, 20, search="tpe", n_trials=6)
    run_workers(4, url, name, 0.05, FAST)
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


def test_real_workers_survive_sigkill_and_sigterm(tiny_pipeline, tmp_path):
    """Three `gafi-opt worker` processes on a tiny digits pipeline: one is SIGKILLed and one SIGTERMed mid-trial."""
    from gafi_opt.launch import prepare_once
    from gafi_opt.spec import load_spec

    tiny_spec, _ = tiny_pipeline  # its models (filter, generator checkpoints) are reused
    url = f"sqlite:///{tmp_path / 'dist.db'}"
    overrides = [*tiny_overrides(tiny_spec.run_path, name="dist"), "cas.epochs=8"]
    spec = load_spec(DIGITS, overrides)
    pipeline = Pipeline.create_or_load(spec, url)
    prepare_once(pipeline, __import__("torch").device("cpu"), progress=False)
    command = [sys.executable, "-m", "gafi_opt.cli", "worker", "--storage", url, "--pipeline", "dist"]
    command += ["--heartbeat-interval", "1", "--grace-period", "4", "--threads", "1", "--quiet"]
    workers = [subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    stage_names = [pipeline.study_name(stage) for stage in STAGES]
    try:
        killed = running_trial_of(url, workers[0].pid, stage_names)
        workers[0].kill()
        stopped = running_trial_of(url, workers[1].pid, stage_names)
        workers[1].send_signal(signal.SIGTERM)
        assert workers[1].wait(timeout=60) == 128 + signal.SIGTERM
        stderr = workers[1].stderr.read()
        assert "Traceback" not in stderr and "interrupted by SIGTERM" in stderr and "marked failed and re-queued" in stderr, stderr
        assert workers[2].wait(timeout=200) == 0, workers[2].stderr.read()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    storage = open_storage(url)
    assert storage.get_trial(killed._trial_id).state == TrialState.FAIL
    assert storage.get_trial(stopped._trial_id).state == TrialState.FAIL
    assert storage.get_trial(stopped._trial_id).system_attrs[slots.REASON] == "interrupted by SIGTERM"
    pipeline = Pipeline.load(url, "dist")
    assert pipeline.current_stage() is None
    for stage in STAGES:
        trials = pipeline.stage_study(stage).get_trials(deepcopy=False)
        assert [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)] == [], stage
        for view in pipeline.slot_views(stage):
            finished = [t for t in trials if t.state in FINISHED and slots.slot_of(t, [v.params for v in pipeline.slot_views(stage)]) == view.slot]
            assert len(finished) == 1, (stage, view.slot, finished)
    # Starting again is harmless: a worker on a complete pipeline exits 0 at once, and so does `run --workers`.
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    args = ["run", str(DIGITS), "--storage", url, "--workers", "2", "--quiet"] + [a for o in overrides for a in ("--set", o)]
    run = subprocess.run([sys.executable, "-m", "gafi_opt.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    assert "| dist | digits |" in run.stdout
