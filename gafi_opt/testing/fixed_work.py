"""Trials of a fixed, small amount of work, run by the real worker loop: for tests and the storage benchmark.

`FixedWork` replaces the CAS objective: it sleeps (like a trial waiting on an accelerator, so
many workers do not compete for a small machine's cores) and returns a value that depends
only on the trial's configuration. `fixed_work_spec` is a pipeline whose checkpoint stage is
a grid of `points` values and needs no data, model or checkpoint; `run_workers` starts worker
processes on it and returns what each one did. `race` has several processes claim the same
WAITING trials (or set the same attrs once, or record a finished pipeline's result trial) at the
same moment, to check that each has one winner.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import uuid
from dataclasses import asdict

import optuna
from optuna.trial import TrialState

from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline, StageLoop, WorkerOptions
from gafi_opt.report.result import record_result
from gafi_opt.search.stages import TrialConfig
from gafi_opt.spec import Spec, spec_from_dict
from gafi_opt.storages import open_storage, set_once

GRID_STAGE = "checkpoint"


class FixedWork:
    def __init__(self, seconds: float, prune_above: float | None = None, nan_at: int | None = None):
        self.seconds = seconds
        self.prune_above = prune_above  # report the value and prune when it is above this
        self.nan_at = nan_at  # the checkpoint whose trials return NaN (a diverging configuration)

    def __call__(self, trial: optuna.Trial, stage: str, config: TrialConfig) -> float:
        time.sleep(self.seconds)
        value = (config.checkpoint * 7919 + config.seed * 104729) % 1000 / 1000
        trial.set_user_attr("work_s", self.seconds)
        if config.checkpoint == self.nan_at:
            return float("nan")
        if self.prune_above is not None:
            trial.report(value, 1)
            if value > self.prune_above:
                raise optuna.TrialPruned()
        return value


def fixed_work_spec(name: str, points: int, storage: str = "", search: str = "grid", n_trials: int = 0) -> Spec:
    """A pipeline whose checkpoint stage is a grid of `points` epochs (1..points), or a budgeted search over them."""
    return spec_from_dict(
        {
            "name": name,
            "storage": storage,
            "generator": {"epochs": points},
            "checkpoint": {"values": list(range(1, points + 1)), "pruner": "none", "search": search, "n_trials": n_trials},
            "stddev": {"values": [1.0]},
            "threshold": {"values": [0.0]},
        },
        "fixed-work spec",
    )


def work(url: str, name: str, seconds: float, options: WorkerOptions, start_at: float = 0.0) -> dict:
    """One worker process: the real loop on the fixed-work grid stage; returns its stats."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pipeline = Pipeline.load(open_storage(url, must_exist=True), name)
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)  # all workers start together, after their imports
    stats = StageLoop(pipeline, FixedWork(seconds), options).run()
    return asdict(stats)


def _work_into(queue, stderr_path, *args) -> None:
    if stderr_path:
        fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)  # what the worker says (waits, warnings, tracebacks) goes to its own file
        os.close(fd)
    try:
        queue.put(("ok", work(*args)))
    except GafiError as exc:  # as `gafi-opt worker` does: no traceback, exit status 2
        queue.put(("error", f"{type(exc).__name__}: {exc}"))
        sys.exit(2)
    except BaseException as exc:  # report, then let the process die as it would
        queue.put(("error", f"{type(exc).__name__}: {exc}"))
        raise


def context() -> multiprocessing.context.BaseContext:
    """Fresh interpreters forked from one server that imported the loop once: fast, no inherited state."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["gafi_opt.testing.fixed_work", "psycopg", "grpc"])  # missing ones are skipped
    return ctx


def _race(kind: str, url: str, study_id: int, keys: list[str], start, queue, storage_factory=None) -> None:
    storage = (storage_factory or open_storage)(url)
    pipeline = Pipeline.load(storage, keys[0]) if kind == "result" else None
    start.wait()
    won = []
    if kind == "result":
        trial = record_result(pipeline)
        won = [] if trial is None else [trial.number]
    elif kind == "claim":
        for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                    won.append(trial._trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass
    else:
        me = uuid.uuid4().hex
        won = [key for key in keys if set_once(storage, study_id, key, me)]
    queue.put(won)


def race(kind: str, url: str, study_id: int, racers: int, keys: list[str] = (), storage_factory=None) -> list[list]:
    """`racers` processes claim every WAITING trial they can (kind "claim"), set every key once
    ("set_once") or record the result trial of the finished pipeline keys[0] ("result": the number
    of the trial each returned), all starting together; returns what each won. `storage_factory(url)` replaces
    gafi-opt's storages (the benchmark races Optuna's stock SQLite storage with it)."""
    ctx = context()
    queue, start = ctx.Queue(), ctx.Event()
    processes = [ctx.Process(target=_race, args=(kind, url, study_id, list(keys), start, queue, storage_factory), daemon=True) for _ in range(racers)]
    for process in processes:
        process.start()
    time.sleep(0.2)
    start.set()
    try:
        return [queue.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)


def start_workers(n: int, url: str, name: str, seconds: float, options: WorkerOptions, start_in: float = 1.0, stderr_dir=None):
    """Start `n` worker processes; returns (processes, queue) - each puts ("ok", stats) or ("error", text).

    With `stderr_dir`, worker i writes its stderr to `stderr_dir/worker-i.err`."""
    ctx = context()
    queue = ctx.Queue()
    start_at = time.time() + start_in
    stderr = [os.path.join(stderr_dir, f"worker-{i}.err") if stderr_dir else None for i in range(n)]
    processes = [ctx.Process(target=_work_into, args=(queue, stderr[i], url, name, seconds, options, start_at), daemon=True) for i in range(n)]
    for process in processes:
        process.start()
    return processes, queue


def run_workers(n: int, url: str, name: str, seconds: float, options: WorkerOptions, timeout: float = 300.0) -> list[dict]:
    """Run `n` worker processes to the end of the grid stage; their stats, or RuntimeError."""
    processes, queue = start_workers(n, url, name, seconds, options)
    results = []
    deadline = time.monotonic() + timeout
    try:
        for _ in processes:
            status, payload = queue.get(timeout=max(1.0, deadline - time.monotonic()))
            if status != "ok":
                raise RuntimeError(f"a worker failed: {payload}")
            results.append(payload)
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
    return results
