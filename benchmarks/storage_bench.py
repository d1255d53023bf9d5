"""Storage benchmark: one grid stage of short fixed-work trials, 1-8 worker processes, three storages.

For each storage (SQLite, PostgreSQL, Optuna's journal file) and each number of workers, a
fresh pipeline's checkpoint stage (a grid of --points values) is run by that many processes of
the real worker loop (gafi_opt/distributed.py), each trial sleeping --work seconds in place of
training a classifier. Reported per run:

- trials/s: grid points / makespan (first trial start to last trial finish, from the storage);
- overhead/trial: workers x makespan / points - work, i.e. the time a worker spent per trial
  on anything but the work itself (claim, ticket, heartbeats, tell, waiting for locks, idling
  at the end of the stage);
- duplicates: grid points with more than one finished trial;
- lost: grid points with no finished trial;
- orphaned: trials left RUNNING or WAITING after every worker exited;
- cancelled: duplicate claims thrown away before running (not an error; expected to be 0).

It then shows why SQLite claims need BEGIN IMMEDIATE: processes race to claim the same WAITING
trials through Optuna's stock RDBStorage and through gafi-opt's, counting trials claimed twice.

    .venv/bin/python benchmarks/storage_bench.py            # writes benchmarks/results/storage_bench.json
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
from optuna.trial import TrialState

from gafi_opt.pipeline import Pipeline
from gafi_opt.pipeline.loop import WorkerOptions
from gafi_opt.storages import slots
from gafi_opt.testing import fixed_work

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import sqlalchemy

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "optuna": optuna.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "gpu": "none",
    }


class Postgres:
    """Fresh databases on the local server (trust auth), dropped at the end."""

    def __init__(self, host: str, port: int):
        import psycopg

        self.host, self.port, self.created = host, port, []
        errors = []
        for user in ("postgres", "root"):
            for dbname in ("test", "postgres"):
                try:
                    self.admin = psycopg.connect(host=host, port=port, user=user, dbname=dbname, autocommit=True, connect_timeout=5)
                    self.user = user
                    self.version = self.admin.execute("SHOW server_version").fetchone()[0]
                    return
                except psycopg.OperationalError as exc:
                    errors.append(str(exc).strip())
        raise SystemExit(f"no PostgreSQL at {host}:{port} (.ci/services.sh starts one): {errors[-1]}")

    def fresh(self) -> str:
        name = f"gafi_bench_{uuid.uuid4().hex[:10]}"
        self.admin.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{name}"

    def close(self) -> None:
        for name in self.created:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.close()


def fresh_url(backend: str, tmp: Path, postgres: Postgres | None) -> str:
    tag = uuid.uuid4().hex[:8]
    if backend == "sqlite":
        return f"sqlite:///{tmp / f'{tag}.db'}"
    if backend == "journal":
        return f"journal://{tmp / f'{tag}.log'}"
    return postgres.fresh()


def run_once(backend: str, url: str, workers: int, points: int, work: float) -> dict:
    name = "bench"
    Pipeline.create_or_load(fixed_work.fixed_work_spec(name, points), url)
    options = WorkerOptions(heartbeat_interval=1, grace_period=10, poll=0.05, stages=(fixed_work.GRID_STAGE,))
    started = time.perf_counter()
    stats = fixed_work.run_workers(workers, url, name, work, options, timeout=900)
    wall = time.perf_counter() - started
    trials = Pipeline.load(url, name).stage_study(fixed_work.GRID_STAGE).get_trials(deepcopy=False)
    ran = [t for t in trials if t.state in FINISHED]
    begin = min(t.datetime_start for t in ran)
    end = max(t.datetime_complete for t in ran)
    makespan = (end - begin).total_seconds()
    finished = collections.Counter(t.params["checkpoint"] for t in ran)
    return {
        "storage": backend,
        "workers": workers,
        "points": points,
        "work_s": work,
        "makespan_s": round(makespan, 3),
        "wall_s_with_startup": round(wall, 3),
        "trials_per_s": round(points / makespan, 2),
        "overhead_per_trial_ms": round(1000 * (workers * makespan / points - work), 1),
        "duplicates": sum(1 for n in finished.values() if n > 1),
        "lost": sum(1 for p in range(1, points + 1) if finished[p] == 0),
        "orphaned": sum(1 for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)),
        "cancelled": sum(1 for t in trials if str(t.system_attrs.get(slots.REASON, "")).startswith("duplicate")),
        "worker_complete_counts": sorted(s["complete"] for s in stats),
    }


def stock_rdb(url: str):
    """Optuna's RDBStorage as it comes (pysqlite's deferred transactions), with a busy timeout."""
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def claim_race(tmp: Path, trials: int, racers: int) -> dict:
    """Trials claimed twice when `racers` processes claim the same WAITING trials at once."""
    result = {}
    for label, factory in (("optuna RDBStorage (stock)", stock_rdb), ("gafi-opt (BEGIN IMMEDIATE)", None)):
        url = f"sqlite:///{tmp / f'race-{uuid.uuid4().hex[:8]}.db'}"
        study = optuna.create_study(storage=(factory or fixed_work.open_storage)(url), study_name="race")
        for i in range(trials):
            study.enqueue_trial({"x": i})
        won = fixed_work.race("claim", url, study._study_id, racers, storage_factory=factory)
        claims = collections.Counter(t for w in won for t in w)
        result[label] = {"trials": trials, "racers": racers, "claimed": len(claims), "claimed_twice_or_more": sum(1 for n in claims.values() if n > 1)}
    return result


def table(rows: list[dict]) -> str:
    head = "| storage | workers | trials/s | overhead/trial (ms) | duplicates | lost | orphaned | cancelled claims |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['storage']} | {r['workers']} | {r['trials_per_s']:.1f} | {r['overhead_per_trial_ms']:.0f} | "
            f"{r['duplicates']} | {r['lost']} | {r['orphaned']} | {r['cancelled']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=48, help="grid points of the stage")
    parser.add_argument("--work", type=float, default=0.05, help="seconds of work per trial (a sleep)")
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--storages", default="sqlite,postgresql,journal")
    parser.add_argument("--postgres", default="127.0.0.1:5432", help="host:port of a PostgreSQL server with trust auth")
    parser.add_argument("--race-trials", type=int, default=200)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "storage_bench.json"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backends = args.storages.split(",")
    host, port = args.postgres.rsplit(":", 1)
    postgres = Postgres(host, int(port)) if "postgresql" in backends else None
    rows = []
    info = machine()
    if postgres:
        info["postgresql"] = postgres.version
    try:
        with tempfile.TemporaryDirectory(prefix="gafi-bench-") as tmp:
            for backend in backends:
                for workers in [int(w) for w in args.workers.split(",")]:
                    row = run_once(backend, fresh_url(backend, Path(tmp), postgres), workers, args.points, args.work)
                    rows.append(row)
                    print(f"{backend:>10} x{workers}: {row['trials_per_s']:.1f} trials/s, overhead {row['overhead_per_trial_ms']:.0f} ms/trial", flush=True)
            race = claim_race(Path(tmp), args.race_trials, 8)
    finally:
        if postgres:
            postgres.close()
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": info,
        "settings": {"points": args.points, "work_s": args.work, "poll_s": 0.05, "heartbeat_interval_s": 1},
        "runs": rows,
        "sqlite_claim_race": race,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(rows))
    print()
    for label, r in race.items():
        print(f"SQLite claim race, {r['racers']} processes on {r['trials']} WAITING trials, {label}: {r['claimed_twice_or_more']} claimed twice or more")
    print(f"\nwritten to {args.out}")
    bad = [r for r in rows if r["duplicates"] or r["lost"] or r["orphaned"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
