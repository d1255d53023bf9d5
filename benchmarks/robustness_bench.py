"""Benchmark: do GaFi's choices hold over new pipeline seeds and a new dataset? argmax against the default rule.

For each dataset and each of `--seeds` pipeline seeds, the whole pipeline runs from nothing: a filter
classifier and a generator trained anew for that seed (in a run directory of the seed's own), then the
baseline, checkpoint, stddev, threshold and final stages, once under each selection rule
(`--rules`, default: the paper's `argmax` and the default `late`, both choosing on val; `paper` is the
paper's whole protocol, `--paper-selection`: argmax on the test split, so an optimistic reference, not a
rule one may use). The rules of a seed share its filter and generator, so they differ only in how the
search stages choose. Everything runs
through `gafi_opt.run_pipeline`, the code `gafi-opt run` runs, in one scratch SQLite storage.

Datasets: `digits` (studies/digits.toml, scikit-learn's bundled digits) and `textures`
(studies/small-images.toml on the texture patches of benchmarks/textures_npz.py, made first if missing).

Printed and written to benchmarks/results/<output>.json, per dataset and rule: the chosen checkpoint /
stddev / threshold of every seed, CAS test (the final stage's mean over its seeds), the synthetic baseline,
the real baseline (the filter classifier's test accuracy), the share of the gap closed (mean, minimum, per
seed), and the classifier-epochs the search stages spent beside what the paper's exhaustive grid spends
(every grid point once at full epochs).

    .venv/bin/python benchmarks/robustness_bench.py                      # 5 seeds, both datasets
    .venv/bin/python benchmarks/robustness_bench.py --datasets digits --seeds 2
    .venv/bin/python benchmarks/robustness_bench.py --datasets digits --keep DIR --report   # a kept run's table, run nothing
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bench import ROOT, command_line, machine, positive_int, result_name, set_threads, table, write_result

import optuna
from optuna.trial import TrialState

from gafi_opt import load_spec, open_storage, run_pipeline, summary_row
from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline
from gafi_opt.report.health import stage_warnings
from gafi_opt.search.stages import SEARCH_STAGES, grid
from gafi_opt.spec import PAPER_SELECTION, RULES

STUDIES = {"digits": ROOT / "studies" / "digits.toml", "textures": ROOT / "studies" / "small-images.toml"}
TEXTURES = ROOT / "data" / "textures.npz"
PAPER = "paper"  # --rules paper: the paper's protocol, choosing on test (PAPER_SELECTION)
GOALS = {  # the goals for the default rule: (mean gap closed, floor for every seed)
    "digits": "mean gap closed >= 60%, every seed >= 40%",
    "textures": "mean gap closed >= 50%, every seed above its synthetic baseline (gap closed > 0)",
}


def exhaustive_epochs(spec) -> int:
    """Classifier-epochs of the paper's exhaustive grid on this spec: every search point once, full epochs,
    the two points that repeat the previous stage's winner reused (stddev 1.0, threshold 0.0)."""
    points = sum(len(grid(spec, stage)) for stage in SEARCH_STAGES)
    reused = int(1.0 in grid(spec, "stddev")) + int(0.0 in grid(spec, "threshold"))
    return (points - reused) * spec.cas.epochs


def search_epochs(pipeline) -> int:
    return sum(
        int(t.user_attrs.get("classifier_epochs", 0))
        for stage in SEARCH_STAGES
        for t in pipeline.finished_trials(stage)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    )


def run_one(dataset: str, seed: int, rule: str, scratch: Path, storage, extra: list[str]) -> dict:
    overrides = [
        f"name={dataset}-s{seed}-{rule}",
        f"seed={seed}",
        f"run_dir={scratch / f'{dataset}-s{seed}'}",  # shared by the rules of a seed: one filter, one generator
        *(PAPER_SELECTION if rule == PAPER else (f"{stage}.rule={rule}" for stage in SEARCH_STAGES)),
        *extra,
    ]
    if dataset == "textures":
        overrides.append(f"data.root={TEXTURES}")
    spec = load_spec(STUDIES[dataset], overrides)
    started = time.perf_counter()
    pipeline = run_pipeline(spec, storage, "cpu", progress=False)
    return describe(dataset, seed, rule, pipeline, round(time.perf_counter() - started, 1))


def kept_pipeline(parser: argparse.ArgumentParser, storage, name: str) -> Pipeline:
    """A finished pipeline of a kept run, or a one-line error (exit 2) saying which is missing or unfinished."""
    try:
        pipeline = Pipeline.load(storage, name)
    except GafiError as exc:
        parser.error(f"--report: {exc}")
    if not pipeline.stage_complete("final"):
        parser.error(f"--report: pipeline {name!r} is not finished (run it without --report, or ask for fewer --seeds or --rules)")
    return pipeline


def describe(dataset: str, seed: int, rule: str, pipeline, seconds: float | None) -> dict:
    """One finished pipeline's row of the benchmark."""
    row = summary_row(pipeline)
    return {
        "dataset": dataset,
        "seed": seed,
        "rule": rule,
        "checkpoint": row["checkpoint"],
        "stddev": row["stddev"],
        "threshold": row["threshold"],
        "cas_test": row["cas_test"],
        "cas_test_std": row["cas_test_std"],
        "cas_val": row["cas_val"],
        "search_val": row["search_val"],
        "synthetic_baseline_test": row["synthetic_baseline_test"],
        "real_test": row["real_test"],
        "gap_closed": row["gap_closed"],
        "search_epochs": search_epochs(pipeline),
        "exhaustive_grid_epochs": exhaustive_epochs(pipeline.spec),
        "warnings": stage_warnings(pipeline),
        "seconds": seconds,
    }


def summarise(runs: list[dict], datasets: list[str], rules: list[str]) -> tuple[str, dict]:
    rows, summary = [], {}
    for dataset in datasets:
        for rule in rules:
            mine = [r for r in runs if r["dataset"] == dataset and r["rule"] == rule]
            if not mine:
                continue
            gaps = [r["gap_closed"] for r in mine if r["gap_closed"] is not None]
            tests = [r["cas_test"] for r in mine]
            entry = {
                "gap_closed_mean": statistics.fmean(gaps) if gaps else None,
                "gap_closed_min": min(gaps) if gaps else None,
                "gap_closed": gaps,
                "cas_test_mean": statistics.fmean(tests),
                "cas_test_sd_over_seeds": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                "search_epochs_mean": statistics.fmean(r["search_epochs"] for r in mine),
                "exhaustive_grid_epochs": mine[0]["exhaustive_grid_epochs"],
                "chosen": [(r["checkpoint"], r["stddev"], r["threshold"]) for r in mine],
                "inflation_mean": statistics.fmean(r["search_val"] - r["cas_val"] for r in mine),
            }
            summary[f"{dataset}/{rule}"] = entry
            rows.append(
                [
                    dataset,
                    rule,
                    " ".join(f"{r['checkpoint']}/{r['stddev']:g}/{r['threshold']:g}" for r in mine),
                    " ".join(f"{100 * r['cas_test']:.1f}" for r in mine),
                    f"{100 * entry['cas_test_mean']:.2f} ± {100 * entry['cas_test_sd_over_seeds']:.2f}",
                    " ".join(f"{100 * r['synthetic_baseline_test']:.1f}" for r in mine),
                    " ".join(f"{100 * r['real_test']:.1f}" for r in mine),
                    " ".join(f"{100 * g:.0f}" for g in gaps),
                    f"{100 * entry['gap_closed_mean']:.0f}%" if gaps else "-",
                    f"{100 * entry['gap_closed_min']:.0f}%" if gaps else "-",
                    f"{entry['search_epochs_mean']:.0f} / {entry['exhaustive_grid_epochs']}",
                    f"{100 * entry['inflation_mean']:+.2f}",
                ]
            )
    headers = [
        "dataset", "rule", "chosen checkpoint/σ/threshold per seed", "CAS test % per seed", "CAS test % (mean ± sd)",
        "synthetic baseline % per seed", "real % per seed", "gap closed % per seed", "gap closed (mean)", "gap closed (min)",
        "search epochs (mean) / exhaustive grid", "search val − final val (pp)",
    ]  # fmt: skip
    return table(headers, rows), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    parser.add_argument("--seeds", type=positive_int, default=5, help="pipeline seeds (each trains its own filter and generator)")
    parser.add_argument("--rules", nargs="+", default=["argmax", "late"], choices=[*RULES, PAPER])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--set", action="append", default=[], help="extra spec overrides for every pipeline")
    parser.add_argument("--keep", default=None, help="keep the run directories and storage in this folder (default: a scratch folder, removed)")
    parser.add_argument("--report", action="store_true", help="run nothing: the table of the finished pipelines kept in --keep")
    parser.add_argument("--output", type=result_name, default="robustness_bench", help="results file name under benchmarks/results/ (.json)")
    args = parser.parse_args()
    set_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started_machine, started = machine(), time.perf_counter()
    if "textures" in args.datasets and not TEXTURES.exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "textures_npz.py"), str(TEXTURES)], check=True)
    if args.report and not args.keep:
        parser.error("--report reads the pipelines kept in --keep")
    if args.report and not (Path(args.keep) / "robustness.db").exists():
        parser.error(f"--report: no kept run in {args.keep} (no robustness.db there)")
    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gafi-robustness-"))
    scratch.mkdir(parents=True, exist_ok=True)
    storage = open_storage(f"sqlite:///{scratch / 'robustness.db'}")
    runs = []
    try:
        for dataset in args.datasets:
            for seed in range(args.seeds):
                for rule in args.rules:  # rules interleaved within each seed
                    if args.report:  # as stored, whatever the code's defaults are now
                        run = describe(dataset, seed, rule, kept_pipeline(parser, storage, f"{dataset}-s{seed}-{rule}"), None)
                    else:
                        run = run_one(dataset, seed, rule, scratch, storage, args.set)
                    runs.append(run)
                    print(
                        f"{dataset} seed {seed} {rule:7s} chosen {run['checkpoint']}/{run['stddev']:g}/{run['threshold']:g}  "
                        f"CAS test {100 * run['cas_test']:.2f}  baseline {100 * run['synthetic_baseline_test']:.2f}  "
                        f"real {100 * run['real_test']:.2f}  gap closed {100 * (run['gap_closed'] or 0):.0f}%  "
                        f"search epochs {run['search_epochs']}  ({run['seconds']} s)",
                        flush=True,
                    )
                    for line in run["warnings"]:
                        print("  " + line, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    text, summary = summarise(runs, args.datasets, args.rules)
    wall = round(time.perf_counter() - started)
    print(text)
    print(f"wall time {wall // 60} min {wall % 60} s; goals for the default rule: " + "; ".join(f"{d}: {GOALS[d]}" for d in args.datasets))
    write_result(
        args.output,
        {"settings": vars(args), "machine_at_start": started_machine, "wall_seconds": wall, "goals": GOALS, "summary": summary, "runs": runs},
        text,
        command_line(),
    )


if __name__ == "__main__":
    main()
