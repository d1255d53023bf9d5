"""Running a pipeline: prepare it once, then work through its stages in one process or N.

The CLI (`run`, `worker`, `scarce`) and the Python API (`run_pipeline`) call this same code.

Preparation (filter classifier, real-only baseline, generator) trains files in the run directory,
so it must never run twice at once on one run dir: `prepare_once` holds an exclusive lock on
`<run_dir>/.prepare.lock` (flock: released by the kernel if the process dies), then marks the
pipeline `prepared` in the storage. A bare `gafi-opt worker` never trains: it waits until the
pipeline is marked prepared (`wait_until_prepared`), then checks that the models are visible on
its own machine (a shared run dir at the same path).

`run_pipeline(..., workers=N)` starts N `gafi-opt worker` processes after preparing: one per GPU
when there are several, otherwise the CPU cores split between them (torch threads =
max(1, cores // N)). The storage URL reaches them through the environment, never the command
line (which other users of the machine can read).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from gafi_opt.cas import CasObjective, TrialContext
from gafi_opt.data import RealData, load_data
from gafi_opt.errors import GafiError
from gafi_opt.models.checkpoints import load_generator, require_checkpoints
from gafi_opt.models.device import resolve_device
from gafi_opt.models.factory import check_generator
from gafi_opt.pipeline import Interrupted, Pipeline, StageLoop, WorkerOptions, WorkerStats
from gafi_opt.report.dashboard import DashboardHooks
from gafi_opt.report.result import record_result
from gafi_opt.result import record_quality
from gafi_opt.search.stages import STAGES
from gafi_opt.spec import Spec
from gafi_opt.storages import open_storage
from gafi_opt.storages.outage import set_outage_limit
from gafi_opt.train.generator import train_generator
from gafi_opt.train.real import filter_path, train_real_classifier
from gafi_opt.train.real_only import train_real_only

PREPARED_ATTR = "prepared"
STORAGE_ENV = "GAFI_STORAGE"
PREPARED_POLL_S = 5.0


def run_pipeline(
    spec: Spec,
    storage=None,
    device: str | torch.device = "auto",
    workers: int = 1,
    progress: bool = True,
    reporter=None,
    options: WorkerOptions | None = None,
    log: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> Pipeline:
    """Prepare once, then run the pipeline to completion with `workers` workers (`threads` CPU threads each),
    then measure the distribution metrics of its synthetic sets (gafi_opt.result.quality) unless stored.

    `storage` is an opened storage (gafi_opt.storages.open_storage) or a URL; default: the spec's.
    `reporter(pipeline, stage)` is called after each trial (the CLI's progress line).
    """
    options = options or WorkerOptions()
    storage = open_storage(storage or spec.storage_url)
    set_outage_limit(storage, options.storage_outage)  # preparing rides out a database outage as the trials do
    pipeline = Pipeline.create_or_load(spec, storage)
    device = resolve_device(device) if isinstance(device, str) else device
    prepare_once(pipeline, device, progress, log)
    if workers <= 1:
        work(pipeline, device, progress=progress, reporter=reporter, options=options)
    else:
        run_processes(pipeline, worker_plan(workers, str(device), threads), options, reporter, log)
        finish(pipeline, device)  # the workers did, unless they all died after the last trial
    return pipeline


def work(pipeline: Pipeline, device: torch.device, progress: bool = True, reporter=None, options: WorkerOptions | None = None) -> WorkerStats:
    """One worker in this process: run the pipeline's trials until every stage is complete, then finish it."""
    hooks = DashboardHooks(reporter)
    context = lambda: TrialContext(pipeline.spec, load_data(pipeline.spec.data), device)  # noqa: E731 - loaded on the first trial
    stats = StageLoop(pipeline, CasObjective(pipeline, context, hooks, progress), options, hooks).run()
    finish(pipeline, device)
    return stats


def finish(pipeline: Pipeline, device: torch.device) -> None:
    """What a complete pipeline gets once, from whichever worker sees it complete first: the distribution
    metrics of its synthetic sets (gafi_opt.result), then the root study's result trial carrying the
    export row with them (gafi_opt.report.result)."""
    record_quality(pipeline, device)
    record_result(pipeline)


def prepare(pipeline: Pipeline, device: torch.device, progress: bool = True, data: RealData | None = None) -> RealData:
    """Train what is missing (filter classifier, real-only baseline, generator) and check the checkpoints fit the spec."""
    spec = pipeline.spec
    data = data or load_data(spec.data)
    if spec.generator.checkpoints:
        check_checkpoints(spec, data, device)  # bring your own: a misfit fails before anything is trained
    real = train_real_classifier(spec, data, device, progress)
    pipeline.set_attr("real_val", real.val_acc)
    pipeline.set_attr("real_test", real.test_acc)
    pipeline.set_attr("dataset", data.name)
    for seed in pipeline.real_only_missing():  # the CAS recipe on real data alone, per final seed
        pipeline.set_real_only(seed, train_real_only(spec, data, device, seed, progress))
    if not spec.generator.checkpoints:
        train_generator(spec, data, device, seed=spec.seed, progress=progress)
        check_checkpoints(spec, data, device)
    return data


def check_checkpoints(spec: Spec, data: RealData, device: torch.device | str = "cpu") -> None:
    """Every checkpoint the search needs exists, and the last one loads into the spec's generator
    and, on the training device, makes images of the data's classes and shape in [-1, 1]."""
    paths = require_checkpoints(spec, spec.checkpoint.values)
    generator = load_generator(spec, paths[max(paths)], data.image_shape, data.num_classes, device)
    check_generator(generator, data.image_shape, data.num_classes, device)


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, on_wait: Callable[[str], None] | None = None):
    """Exclusive lock on the run directory's preparation (waits for another holder)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".prepare.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait(f"another process is preparing {run_dir}; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def prepare_once(pipeline: Pipeline, device, progress: bool = True, log: Callable[[str], None] | None = None) -> None:
    """Train what the pipeline lacks, one process at a time per run dir; then mark it prepared."""
    run_dir = pipeline.spec.run_path
    with run_dir_lock(run_dir, log):
        prepare(pipeline, device, progress)
    marker = {"run_dir": str(run_dir.resolve()), "host": socket.gethostname(), "at": round(time.time())}
    if pipeline.attrs().get(PREPARED_ATTR, {}).get("run_dir") != marker["run_dir"]:
        pipeline.set_attr(PREPARED_ATTR, marker)


def wait_until_prepared(pipeline: Pipeline, timeout: float | None = None, log: Callable[[str], None] | None = None) -> None:
    """Block until `gafi-opt run` has prepared the pipeline (timeout None: no limit; 0: do not wait)."""
    started = time.monotonic()
    announced = False
    while (prepared := pipeline.attrs().get(PREPARED_ATTR)) is None:
        if timeout is not None and time.monotonic() - started >= timeout:
            raise GafiError(
                f"pipeline {pipeline.name!r} is not prepared (filter classifier and generator not trained yet): "
                "start `gafi-opt run STUDY` with the same storage, which prepares it once and then works"
            )
        if not announced and log:
            log(f"waiting for pipeline {pipeline.name!r} to be prepared by `gafi-opt run` (filter classifier, generator)")
            announced = True
        time.sleep(PREPARED_POLL_S if timeout is None else min(PREPARED_POLL_S, max(0.1, timeout / 10)))
    check_models_visible(pipeline.spec, prepared)


def check_models_visible(spec: Spec, prepared: dict) -> None:
    """The prepared models must be readable here: a shared run dir, at the same path on every machine."""
    where = f"prepared in {prepared.get('run_dir')} on {prepared.get('host')}"
    path = filter_path(spec)
    if not path.exists():
        raise GafiError(
            f"pipeline {spec.name!r} was {where}, but {path.resolve()} does not exist here: every worker needs "
            "the run directory at the same path (a shared filesystem such as NFS, and an absolute run_dir in the study file)"
        )
    try:
        require_checkpoints(spec, spec.checkpoint.values)
    except GafiError as exc:
        raise GafiError(f"pipeline {spec.name!r} was {where}, but here: {exc} (share the run directory at the same path)") from None


def worker_plan(workers: int, device: str, threads: int | None = None) -> list[dict]:
    """Per worker process: its device and its torch CPU threads (`threads`, else the cores split between them)."""
    resolved = resolve_device(device)
    gpus = torch.cuda.device_count() if resolved.type == "cuda" else 0
    if gpus > 1 and resolved.index is None:
        return [{"device": f"cuda:{i % gpus}", "threads": None} for i in range(workers)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = threads or max(1, cores // workers)
    return [{"device": str(resolved), "threads": threads} for _ in range(workers)]


def run_processes(pipeline: Pipeline, plan: list[dict], options: WorkerOptions, reporter=None, log=None) -> None:
    """Start one `gafi-opt worker` per plan entry and wait for them; forwards SIGTERM to them."""
    env = dict(os.environ, **{STORAGE_ENV: pipeline.storage_url})
    processes = []
    for entry in plan:
        command = [
            sys.executable, "-m", "gafi_opt.cli", "worker", "--pipeline", pipeline.name, "--device", entry["device"],
            "--heartbeat-interval", str(int(options.heartbeat_interval)), "--grace-period", str(int(options.grace_period)),
            "--storage-outage", str(int(options.storage_outage)), "--wait-prepared", "0", "--quiet",
        ]  # fmt: skip
        if entry["threads"]:
            command += ["--threads", str(entry["threads"])]
        # Own process group: a terminal's Ctrl-C reaches the parent only, which forwards it once
        # (a second signal would make a worker stop at once, without re-queuing its trial).
        processes.append(subprocess.Popen(command, env=env, process_group=0))
    if log:
        log(f"started {len(processes)} workers (pids {', '.join(str(p.pid) for p in processes)}) on pipeline {pipeline.name!r}")

    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while any(p.poll() is None for p in processes):
            if reporter is not None and not received:
                with contextlib.suppress(Exception):  # the progress line must never stop the run
                    stage = pipeline.current_stage()
                    if stage is not None:
                        reporter(pipeline, stage)
            time.sleep(1.0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if reporter is not None and not received:
        with contextlib.suppress(Exception):
            reporter(pipeline, STAGES[-1])  # the last stage's line, complete
    if received:
        raise Interrupted(received[0], f"{len(processes)} workers stopped; their trials were marked failed and re-queued")
    failed = ", ".join(f"{p.pid} (exit status {p.returncode})" for p in processes if p.returncode != 0)
    if pipeline.current_stage() is not None:
        raise GafiError(f"the workers stopped before pipeline {pipeline.name!r} was complete: {failed or 'none failed'}; see their messages above")
    if failed and log:
        log(f"worker process(es) {failed} ended early; the others completed the pipeline")
