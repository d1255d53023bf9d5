"""What the search benchmark's JSON says beyond its table: selection inflation, early ranking, and the choices.

Reads a results file written by search_bench.py and prints, from the runs it keeps:

- selection inflation: per seed, the grid's best search val minus the val of its chosen
  configuration retrained in the final stage (mean and range), and each mode's final val and test;
- how early the checkpoint stage ranks: over the grid's checkpoint trials of each seed, the
  Spearman correlation of the val at an early epoch with the val at the last epoch (the range
  over seeds), the evidence for where successive halving may cut;
- what each mode chose, counted over seeds (for instance how often the threshold stage kept 0).

    .venv/bin/python benchmarks/search_bench_report.py search_bench_10_seeds
    .venv/bin/python benchmarks/search_bench_report.py search_bench --epochs 5 10
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter

from _bench import RESULTS, positive_int, result_name
from scipy.stats import spearmanr


def selection_inflation(runs: dict) -> list[str]:
    lines = []
    grid = runs.get("grid", [])
    if grid:
        gaps = [100 * (r["best_val"] - r["final_val"]) for r in grid]
        lines.append(f"grid: best search val - final val, points: mean {statistics.mean(gaps):.2f}, "
                     f"range {min(gaps):.2f} to {max(gaps):.2f} over {len(gaps)} seeds")
    for mode, mode_runs in runs.items():
        best = statistics.mean(100 * r["best_val"] for r in mode_runs)
        final_val = statistics.mean(100 * r["final_val"] for r in mode_runs)
        tests = [100 * r["final_test"] for r in mode_runs]
        spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
        lines.append(f"{mode}: best search val {best:.2f}, final val {final_val:.2f}, "
                     f"final test {statistics.mean(tests):.2f} ± {spread:.2f}")
    return lines


def early_ranking(runs: dict, epochs: list[int]) -> list[str]:
    lines = []
    for epoch in epochs:
        rhos = []
        for run in runs.get("grid", []):
            histories = [t["history"] for t in run["trials"] if t["stage"] == "checkpoint" and t.get("history")]
            if len(histories) < 3 or any(len(h) < epoch for h in histories):
                continue
            rho = spearmanr([h[epoch - 1] for h in histories], [h[-1] for h in histories]).statistic
            rhos.append(float(rho))
        if rhos:
            lines.append(f"checkpoint stage, Spearman(val at epoch {epoch}, val at the last epoch) over the grid's "
                         f"checkpoints: {min(rhos):.2f} to {max(rhos):.2f} over {len(rhos)} seeds")
    return lines


def choices(runs: dict) -> list[str]:
    lines = []
    for mode, mode_runs in runs.items():
        for name in ("checkpoint", "stddev", "threshold"):
            counts = Counter(r["chosen"][name] for r in mode_runs)
            shown = ", ".join(f"{value} x{count}" for value, count in sorted(counts.items()))
            lines.append(f"{mode}: {name} chosen {shown}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=result_name, help="results file name under benchmarks/results/ (without .json)")
    parser.add_argument("--epochs", type=positive_int, nargs="+", default=[5, 10],
                        help="early epochs whose val is ranked against the last epoch's")
    args = parser.parse_args()
    path = RESULTS / f"{args.result.removesuffix('.json')}.json"
    if not path.exists():
        parser.error(f"no results file {path} (run search_bench.py first)")
    try:
        runs = json.loads(path.read_text())["runs"]
    except (json.JSONDecodeError, KeyError, TypeError):
        parser.error(f"{path} is not a search_bench.py results file (no per-run results in it)")
    for line in selection_inflation(runs) + early_ranking(runs, args.epochs) + choices(runs):
        print(line)


if __name__ == "__main__":
    main()
