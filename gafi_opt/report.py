"""Tables of a pipeline's results: the best hyperparameters and CAS beside both baselines."""

from __future__ import annotations

import json
import math

from optuna.trial import TrialState

from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline
from gafi_opt.stages import SEARCHED, STAGES

EXPORT_KEYS = (
    "pipeline",
    "dataset",
    "checkpoint",
    "stddev",
    "threshold",
    "cas_val",
    "cas_test",
    "cas_test_std",
    "seeds",
    "synthetic_baseline_test",
    "real_test",
    "gap_closed",
    "selection",
)


def summary_row(pipeline: Pipeline) -> dict:
    """One row per pipeline; accuracies are fractions, None where a stage has not finished."""
    attrs = pipeline.attrs()
    row = {key: None for key in EXPORT_KEYS}
    row.update(pipeline=pipeline.name, dataset=attrs.get("dataset", pipeline.spec.data.source), selection=pipeline.spec.selection)
    for stage in ("checkpoint", "stddev", "threshold"):
        if pipeline.stage_complete(stage):
            row[SEARCHED[stage]] = pipeline.best_value(stage)
    final = pipeline.seed_summary("final")
    if final:
        row.update(cas_val=final["val"], cas_test=final["test"], cas_test_std=final["test_std"], seeds=final["seeds"])
    baseline = pipeline.seed_summary("baseline")
    if baseline:
        row["synthetic_baseline_test"] = baseline["test"]
    row["real_test"] = attrs.get("real_test")
    if None not in (row["cas_test"], row["synthetic_baseline_test"], row["real_test"]):
        gap = row["real_test"] - row["synthetic_baseline_test"]
        row["gap_closed"] = (row["cas_test"] - row["synthetic_baseline_test"]) / gap if gap > 0 else None
    return row


def stage_status(pipeline: Pipeline) -> list[dict]:
    """Trial counts per stage, for `gafi-opt status`."""
    current = pipeline.current_stage()
    rows = []
    for stage in STAGES:
        study = pipeline.stage_study(stage)
        counts = {state.name.lower(): 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)}
        if study is not None:
            for trial in study.get_trials(deepcopy=False):
                counts[trial.state.name.lower()] += 1
        state = "done" if pipeline.stage_complete(stage) else ("current" if stage == current else "pending")
        rows.append({"stage": stage, "state": state, **counts})
    return rows


def format_rows(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "markdown":
        return markdown_table(rows)
    raise GafiError(f"unknown export format {fmt!r}")


def markdown_table(rows: list[dict]) -> str:
    headers = ["pipeline", "dataset", "checkpoint", "stddev", "threshold", "CAS val", "CAS test", "synthetic baseline", "real", "gap closed"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cas = _pct(row["cas_test"]) + (f" ± {_pct(row['cas_test_std'])}" if row["cas_test_std"] is not None else "")
        if row["selection"] == "test":
            cas += " (test-selected)"
        cells = [
            row["pipeline"],
            row["dataset"],
            _plain(row["checkpoint"]),
            _plain(row["stddev"]),
            _plain(row["threshold"]),
            _pct(row["cas_val"]),
            cas,
            _pct(row["synthetic_baseline_test"]),
            _pct(row["real_test"]),
            _pct(row["gap_closed"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


def _plain(value) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
