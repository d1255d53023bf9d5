"""Analysis: where a kept robustness run's noise lies, and what the search stages could have gained.

Reads the pipelines that `benchmarks/robustness_bench.py --keep DIR` kept (runs nothing) and prints three
tables, written with the raw numbers to benchmarks/results/<output>.json:

1. The stage curves: for every search stage and grid value, pooled over the pipelines, the mean test accuracy
   of its complete trials, each centred on its own stage's mean (test is recorded, never used to choose), its
   standard error, the same for the late val score, and how many trials there were pruned. A flat curve is
   one no rule can choose well on, and need not.
2. The score: within each search stage, the rank correlation (Spearman) between a trial's val score and its
   own test accuracy, for the val averaged over the last 1, 2, 3, 4 and 6 epochs, of the accuracy and (where the
   trials recorded it) of the soft accuracy the `soft` rule scores by. The same classifier answers val and test,
   so both correlations carry its luck; they compare scores, not rules.
3. The ruler: per pipeline of `--rule`, the standard error that the final stage's and the baseline's
   classifier seeds put on CAS test − synthetic baseline, against the spread of that gain over pipeline seeds,
   and the standard error it implies for a seed's share of the gap closed.

    .venv/bin/python benchmarks/noise_analysis.py --keep /tmp/rb/digits-nopr --output noise_analysis_digits_amd_no_pruning
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from _bench import command_line, machine, result_name, table, write_result

import numpy as np
import optuna
from optuna.trial import TrialState
from scipy.stats import spearmanr

from gafi_opt import open_storage
from gafi_opt.pipeline import Pipeline
from gafi_opt.pipeline.store import pipeline_names
from gafi_opt.search.selection import late_epochs, trial_score
from gafi_opt.search.stages import SEARCH_STAGES

LATE_WINDOWS = (1, 2, 3, 4, 6)
MIN_TRIALS = 4  # a stage with fewer complete trials says nothing about ranks
SCORES = {"accuracy": "late", "soft accuracy": "soft"}  # the score's name: the rule whose trial_score reads it


def complete_trials(pipeline: Pipeline, stage: str) -> list:
    return [
        t
        for t in pipeline.finished_trials(stage)
        if t.state == TrialState.COMPLETE and t.user_attrs.get("val_history") and t.user_attrs.get("test_acc") is not None
    ]


def stage_curves(pipelines: list[Pipeline]) -> dict:
    """Per stage and grid value: centred test and late val of complete trials, and the pruned count."""
    pooled = {stage: defaultdict(lambda: {"test": [], "val": [], "pruned": 0}) for stage in SEARCH_STAGES}
    for pipeline in pipelines:
        late = late_epochs(pipeline.spec.cas.epochs, pipeline.spec.cas.lr_milestones)
        for stage in SEARCH_STAGES:
            done = complete_trials(pipeline, stage)
            for trial in pipeline.finished_trials(stage):
                if trial.state == TrialState.PRUNED and stage in trial.params:
                    pooled[stage][float(trial.params[stage])]["pruned"] += 1
            if len(done) < 3:
                continue
            tests = [t.user_attrs["test_acc"] for t in done]
            vals = [trial_score(t, "late", "val_acc", late) for t in done]
            for trial, test, val in zip(done, tests, vals):
                point = pooled[stage][float(trial.params[stage])]
                point["test"].append(test - statistics.fmean(tests))
                point["val"].append(val - statistics.fmean(vals))
    return {
        stage: [
            {
                "value": value,
                "complete": len(p["test"]),
                "pruned": p["pruned"],
                "test_centred": statistics.fmean(p["test"]) if p["test"] else None,
                "test_centred_se": statistics.stdev(p["test"]) / len(p["test"]) ** 0.5 if len(p["test"]) > 1 else None,
                "val_centred": statistics.fmean(p["val"]) if p["val"] else None,
            }
            for value, p in sorted(points.items())
        ]
        for stage, points in pooled.items()
    }


def score_correlations(pipelines: list[Pipeline]) -> dict:
    """Per score, mean within-stage Spearman correlation between val averaged over the last k epochs and test."""
    found = {(name, k): [] for name in SCORES for k in LATE_WINDOWS}
    for pipeline in pipelines:
        for stage in SEARCH_STAGES:
            done = complete_trials(pipeline, stage)
            if len(done) < MIN_TRIALS:
                continue
            tests = [t.user_attrs["test_acc"] for t in done]
            for (name, k), rhos in found.items():
                scores = [trial_score(t, SCORES[name], "val_acc", k) for t in done]
                if None in scores:  # trials from before the soft accuracy was recorded
                    continue
                rho = spearmanr(scores, tests).statistic
                if np.isfinite(rho):
                    rhos.append(float(rho))
    return {
        name: {str(k): {"spearman": statistics.fmean(found[name, k]), "stages": len(found[name, k])} for k in LATE_WINDOWS if found[name, k]}
        for name in SCORES
    }


def measurement_noise(pipelines: list[Pipeline]) -> dict:
    """The standard error of each pipeline's CAS − baseline from its seeds, against the gain's spread over pipelines."""
    rows = []
    for pipeline in pipelines:
        final = [t.user_attrs["test_acc"] for t in pipeline.finished_trials("final") if t.state == TrialState.COMPLETE]
        base = [t.user_attrs["test_acc"] for t in pipeline.finished_trials("baseline") if t.state == TrialState.COMPLETE]
        real = pipeline.attrs().get("real_test")
        if len(final) < 2 or len(base) < 2 or real is None:
            continue
        se = (statistics.variance(final) / len(final) + statistics.variance(base) / len(base)) ** 0.5
        gap = real - statistics.fmean(base)
        rows.append(
            {
                "pipeline": pipeline.spec.name,
                "final_sd": statistics.stdev(final),
                "baseline_sd": statistics.stdev(base),
                "gain": statistics.fmean(final) - statistics.fmean(base),
                "gain_se": se,
                "gap_closed_se": se / gap if gap > 0 else None,
            }
        )
    gains = [r["gain"] for r in rows]
    return {
        "pipelines": rows,
        "gain_se_mean": statistics.fmean(r["gain_se"] for r in rows) if rows else None,
        "gain_sd_over_seeds": statistics.stdev(gains) if len(gains) > 1 else None,
        "gap_closed_se_mean": statistics.fmean(r["gap_closed_se"] for r in rows if r["gap_closed_se"] is not None) if rows else None,
    }


def pct(value, sign: bool = False) -> str:
    return "-" if value is None else f"{100 * value:{'+' if sign else ''}.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", required=True, help="the folder a robustness_bench.py --keep run left")
    parser.add_argument("--rule", default="late", help="the rule whose pipelines table 3 reads (tables 1-2 pool every rule)")
    parser.add_argument("--output", type=result_name, default="noise_analysis", help="results file name under benchmarks/results/ (.json)")
    args = parser.parse_args()
    db = Path(args.keep) / "robustness.db"
    if not db.exists():
        parser.error(f"--keep: no kept run in {args.keep} (no robustness.db there)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(f"sqlite:///{db}")
    pipelines = [Pipeline.load(storage, name) for name in pipeline_names(storage)]
    pipelines = [p for p in pipelines if p.stage_complete("final")]
    if not pipelines:
        parser.error(f"--keep: no finished pipeline in {args.keep}")
    mine = [p for p in pipelines if p.spec.name.endswith(f"-{args.rule}")]
    if not mine:
        parser.error(f"--rule: no finished pipeline of rule {args.rule!r} in {args.keep}")

    curves, correlations, noise = stage_curves(pipelines), score_correlations(pipelines), measurement_noise(mine)
    parts = [f"Stage curves, {len(pipelines)} pipelines (test and late val of complete trials, centred per stage, in points):"]
    for stage, points in curves.items():
        parts.append(
            table(
                [stage, "complete", "pruned", "test (centred)", "± se", "late val (centred)"],
                [[f"{p['value']:g}", p["complete"], p["pruned"], pct(p["test_centred"], True), pct(p["test_centred_se"]), pct(p["val_centred"], True)] for p in points],
            )
        )
    parts.append("Within-stage rank correlation of a trial's val score with its own test accuracy:")
    rows = [[name, f"{k} epoch(s)", f"{c['spearman']:.3f}", c["stages"]] for name, by_window in correlations.items() for k, c in by_window.items()]
    parts.append(table(["val score", "averaged over the last", "Spearman (mean over stages)", "stages"], rows))
    parts.append(
        f"The ruler ({len(noise['pipelines'])} pipelines of rule {args.rule}): standard error of CAS test − baseline from the "
        f"final and baseline seeds {pct(noise['gain_se_mean'])} points on average; spread of that gain over pipeline seeds "
        f"{pct(noise['gain_sd_over_seeds'])} points; standard error of a seed's gap closed about {pct(noise['gap_closed_se_mean'])}% of the gap."
    )
    text = "\n\n".join(parts)
    print(text)
    write_result(
        args.output,
        {"settings": vars(args), "machine_at_start": machine(), "stage_curves": curves, "score_correlations": correlations, "measurement_noise": noise},
        text,
        command_line(),
    )


if __name__ == "__main__":
    main()
