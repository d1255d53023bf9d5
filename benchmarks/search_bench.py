"""Benchmark 3: how the search stages choose, and what it costs: selection rules and budgeted search.

On the digits preset, for each of several seeds (the spec's `seed`), the search stages
(checkpoint -> stddev -> threshold, each fixing its choice for the next) are run in each mode:

- grid: every grid point, full classifier epochs, no pruner, argmax (the paper's exhaustive way);
- argmax, fresh, late, robust: every grid point with the preset's median pruner, under each selection
  rule of gafi_opt.search.selection (each adds one remedy against luck to the one before; late is
  the default);
- tpe+sha, tpe+hyperband, gp+sha: a budgeted search (Optuna's TPE or GP sampler over the same ranges,
  a trial budget per stage) cut by successive halving or Hyperband, under the default rule;

then the final stage (the chosen configuration, set renewed every epoch, `final.seeds` fresh
classifier seeds) gives the test CAS each ends with. Every pipeline runs in a scratch SQLite storage
through the library's own worker loop and CAS trial (gafi_opt.pipeline.StageLoop,
gafi_opt.cas.CasObjective), one worker, one trial at a time, so the counts are exact and
reproducible on one machine; classifier-epochs are read from each trial's `classifier_epochs` attr.

Reported per mode: search classifier-epochs (and their share of the grid's), the epochs after which
the best val CAS so far first came within `--tolerance` points of the grid's best (same seed), the
search's best val, the final stage's fresh val, and the final test CAS (mean and spread over seeds,
and the worst seed). Best search val minus final val is how much selection inflated the best val.

It reuses the digits generator checkpoints and filter (runs/digits, made by `gafi-opt run
studies/digits.toml`); they are copied to a scratch folder first.

    .venv/bin/python benchmarks/search_bench.py                 # 3 seeds, grid / late / tpe+sha / gp+sha
    .venv/bin/python benchmarks/search_bench.py --seeds 10 --modes grid argmax fresh late robust --output selection_bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch
from _bench import ROOT, command_line, machine, result_name, set_threads, table, write_result
from optuna.trial import TrialState

from gafi_opt.cas import CasObjective, TrialContext
from gafi_opt.data import load_data
from gafi_opt.pipeline import Pipeline, StageLoop, WorkerOptions
from gafi_opt.search.stages import SEARCH_STAGES, SEARCHED
from gafi_opt.spec import load_spec
from gafi_opt.storages import open_storage

MODES = {
    # mode -> overrides applied to every search stage
    "grid": {"search": "grid", "pruner": "none", "rule": "argmax"},  # the paper: every point, full epochs, argmax
    "argmax": {"search": "grid", "pruner": "median", "rule": "argmax"},  # the preset's pruner, the paper's rule
    "fresh": {"search": "grid", "pruner": "median", "rule": "fresh"},  # + the previous winner evaluated afresh
    "late": {"search": "grid", "pruner": "median", "rule": "late"},  # + late-epoch averaging: the default
    "robust": {"search": "grid", "pruner": "median", "rule": "robust"},  # + the smoothed estimate
    "tpe+sha": {"search": "tpe", "pruner": "sha"},
    "tpe+hyperband": {"search": "tpe", "pruner": "hyperband"},
    "gp+sha": {"search": "gp", "pruner": "sha"},
}


def mode_overrides(mode: str, trials: dict[str, int]) -> list[str]:
    out = []
    for stage in SEARCH_STAGES:
        out += [f"{stage}.{key}={json.dumps(value)}" for key, value in MODES[mode].items()]
        if MODES[mode]["search"] != "grid" and stage in trials:
            out.append(f"{stage}.n_trials={trials[stage]}")
    return out


def parse_trials(text: str) -> dict[str, int]:
    pairs = (item.split("=") for item in text.split(",") if item)
    return {stage.strip(): int(count) for stage, count in pairs}


def run_pipeline(spec, storage, data, device) -> dict:
    """The search stages, then the final stage, of one pipeline in `storage`, by the one worker loop."""
    pipeline = Pipeline.create_or_load(spec, storage)
    objective = CasObjective(pipeline, TrialContext(spec, data, device))
    started = time.perf_counter()
    StageLoop(pipeline, objective, WorkerOptions(stages=SEARCH_STAGES)).run()
    search_seconds = time.perf_counter() - started
    StageLoop(pipeline, objective, WorkerOptions(stages=("final",))).run()
    log = []
    for stage in SEARCH_STAGES:
        for trial in sorted(pipeline.finished_trials(stage), key=lambda t: t.number):
            attrs = trial.user_attrs
            entry = {"stage": stage, "value": trial.params[SEARCHED[stage]], "epochs": attrs["classifier_epochs"], "val": attrs["val_acc"],
                     "complete": trial.state == TrialState.COMPLETE}
            if entry["complete"]:
                entry["test"] = attrs["test_acc"]
                entry.update({"reused": attrs["reused"]} if "reused" in attrs else {"history": attrs["val_history"]})
            log.append(entry)
    chosen = {SEARCHED[stage]: pipeline.best_value(stage) for stage in SEARCH_STAGES}
    finals = [{"val": t.user_attrs["val_acc"], "test": t.user_attrs["test_acc"]} for t in pipeline.finished_trials("final")]
    return {
        "chosen": {key: value if isinstance(value, int) else round(value, 9) for key, value in chosen.items()},
        "trials": log,
        "search_epochs": sum(t["epochs"] for t in log),
        "search_seconds": round(search_seconds, 1),
        "best_val": max(t["val"] for t in log if t["complete"]),
        "final_test": statistics.fmean(f["test"] for f in finals),
        "final_val": statistics.fmean(f["val"] for f in finals),
        "finals": finals,
    }


def epochs_to_reach(log: list, target: float) -> int | None:
    """Cumulative classifier-epochs when a complete trial's val CAS first reaches `target`."""
    spent = 0
    for t in log:
        spent += t["epochs"]
        if t["complete"] and t["val"] >= target - 1e-9:
            return spent
    return None


def scratch_run_dir(source: Path, epochs) -> Path:
    """Copy the filter and the needed generator checkpoints, so that a concurrent run cannot change them."""
    target = Path(tempfile.mkdtemp(prefix="gafi-search-bench-"))
    (target / "generator").mkdir()
    shutil.copy2(source / "filter.pt", target / "filter.pt")
    for epoch in epochs:
        name = f"epoch_{int(epoch):04d}.pt"
        shutil.copy2(source / "generator" / name, target / "generator" / name)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "digits.toml"))
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "digits"), help="holds filter.pt and generator/epoch_*.pt")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["grid", "late", "tpe+sha", "gp+sha"], choices=list(MODES))
    parser.add_argument("--trials", default="checkpoint=4,stddev=2,threshold=2",
                        help="trial budget of each budgeted stage (the checkpoint matters most on digits)")
    parser.add_argument("--tolerance", type=float, default=0.5, help="points of val CAS below the grid's best that count as reached")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--set", action="append", default=[], help="extra spec overrides for every mode")
    parser.add_argument("--output", type=result_name, default="search_bench", help="results file name, under benchmarks/results/ (.json)")
    args = parser.parse_args()
    set_threads(args.threads)
    started_machine = machine()

    base = load_spec(args.study, args.set)
    if not (Path(args.run_dir) / "filter.pt").exists():
        raise SystemExit(f"no filter.pt in {args.run_dir}: run 'gafi-opt run {args.study}' first")
    run_dir = scratch_run_dir(Path(args.run_dir), base.checkpoint.values)
    data = load_data(base.data)
    device = torch.device("cpu")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(f"sqlite:///{run_dir / 'search_bench.db'}")  # one storage, a pipeline per seed and mode
    results: dict = {mode: [] for mode in args.modes}
    try:
        for seed in range(args.seeds):
            for mode in args.modes:  # modes interleaved within each seed
                spec = load_spec(args.study, args.set + [f"name={mode}-s{seed}", f"seed={seed}", f"run_dir={run_dir}"]
                                 + mode_overrides(mode, parse_trials(args.trials)))
                run = run_pipeline(spec, storage, data, device)
                run["seed"] = seed
                results[mode].append(run)
                print(f"seed {seed} {mode:14s} epochs {run['search_epochs']:4d}  best val {run['best_val']:.4f}  "
                      f"final test {run['final_test']:.4f}  chosen {run['chosen']}  ({run['search_seconds']}s)", flush=True)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    rows, summary = [], {}
    grid_runs = results.get("grid")
    for mode, runs in results.items():
        epochs = [r["search_epochs"] for r in runs]
        tests = [r["final_test"] for r in runs]
        entry = {"search_epochs": epochs, "final_test": tests, "chosen": [r["chosen"] for r in runs]}
        reach = []
        if grid_runs:
            for run, g in zip(runs, grid_runs):
                reach.append(epochs_to_reach(run["trials"], g["best_val"] - args.tolerance / 100))
            entry["epochs_to_reach"] = reach
            grid_epochs = statistics.fmean(r["search_epochs"] for r in grid_runs)
        reached = [r for r in reach if r is not None]
        rows.append([
            mode,
            f"{statistics.fmean(epochs):.0f}",
            f"{100 * statistics.fmean(epochs) / grid_epochs:.0f}%" if grid_runs else "-",
            f"{len(reached)}/{len(runs)}",
            f"{statistics.median(reached):.0f}" if reached else "never",
            f"{100 * statistics.median(reached) / grid_epochs:.0f}%" if reached and grid_runs else "-",
            f"{100 * statistics.fmean(r['best_val'] for r in runs):.2f}",
            f"{100 * statistics.fmean(r['final_val'] for r in runs):.2f}",
            f"{100 * statistics.fmean(tests):.2f} ± {100 * (statistics.stdev(tests) if len(tests) > 1 else 0):.2f}",
            f"{100 * min(tests):.2f}",
        ])
        summary[mode] = entry
    headers = ["mode", "search epochs (mean)", "of grid", f"reached grid best -{args.tolerance}", "epochs to reach (median)",
               "of grid", "best search val %", "final val %", "final test CAS % (mean ± sd over seeds)",
               "worst seed %"]
    text = table(headers, rows)
    print(text)
    write_result(args.output, {"settings": vars(args), "machine_at_start": started_machine, "summary": summary,
                                  "runs": results}, text, command_line())


if __name__ == "__main__":
    main()
