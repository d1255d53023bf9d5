"""The ablation table: CAS of the final choice with each GaFi technique left out and alone, beside the full row.

One row per variant (gafi_opt.pipeline.ablation), the first being the full GaFi choice (the final
stage's own trials); CAS is the mean ± sample sd of test accuracy over the seeds finished so far, and
`delta_test` the variant's mean minus the full row's (negative: the variant does worse). Markdown and
LaTeX show percentages and percentage points; CSV and JSON keep fractions at full precision.
"""

from __future__ import annotations

import csv
import io
import json

from optuna.trial import TrialState

from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline
from gafi_opt.pipeline.ablation import FULL, VARIANTS, Variant, ablated_choice, variant_trials
from gafi_opt.report.formats import FORMATS, _latex_escape, _num, _pct, _plain
from gafi_opt.stats import mean_sd

ABLATION_KEYS = (
    "pipeline",
    "variant",
    "label",
    "filter",
    "expansion",
    "recycling",
    "checkpoint",
    "stddev",
    "threshold",
    "recycle_every",
    "cas_val",
    "cas_test",
    "cas_test_std",
    "seeds",
    "delta_test",
    "selection",
)


def ablation_rows(pipeline: Pipeline) -> list[dict]:
    """The pipeline's ablation table ([] when it has no ablation study)."""
    trials = variant_trials(pipeline)
    choice = ablated_choice(pipeline)
    if trials is None or choice is None:
        return []
    full = [t for t in pipeline.finished_trials("final") if t.state == TrialState.COMPLETE]
    rows = [_row(pipeline, FULL, choice, full)]
    rows += [_row(pipeline, variant, choice, trials[variant.name]) for variant in VARIANTS]
    reference = rows[0]["cas_test"]
    for row in rows:
        if None not in (row["cas_test"], reference):
            row["delta_test"] = row["cas_test"] - reference
    return rows


def _row(pipeline: Pipeline, variant: Variant, choice: dict, trials: list) -> dict:
    config = variant.config(choice, 0)
    row = {key: None for key in ABLATION_KEYS}
    row.update(
        pipeline=pipeline.name,
        variant=variant.name,
        label=variant.label,
        filter=variant.filter,
        expansion=variant.expansion,
        recycling=variant.recycling,
        checkpoint=config.checkpoint,
        stddev=config.stddev,
        threshold=config.threshold,
        recycle_every=config.recycle_every,
        seeds=len(trials),
        selection=pipeline.spec.selection,
    )
    if trials:
        test, test_std = mean_sd(t.user_attrs["test_acc"] for t in trials)
        row.update(cas_val=mean_sd(t.user_attrs["val_acc"] for t in trials)[0], cas_test=test, cas_test_std=test_std)
    return row


def format_ablation(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=ABLATION_KEYS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_cell(row.get(key)) for key in ABLATION_KEYS})
        return out.getvalue().rstrip("\n")
    if fmt == "markdown":
        return _markdown(rows)
    if fmt == "latex":
        return _latex(rows)
    raise GafiError(f"unknown export format {fmt!r} (use {', '.join(FORMATS)})")


def _csv_cell(value) -> str:
    """Empty for missing, true/false as in JSON, numbers at full precision."""
    return "" if value is None else json.dumps(value) if isinstance(value, bool) else str(value)


def _knobs(row: dict) -> tuple[str, str, str]:
    """The three techniques' cells: the value in use, or off."""
    threshold = f"threshold {_plain(row['threshold'])}" if row["filter"] else "off"
    stddev = f"σ {_plain(row['stddev'])}" if row["expansion"] else "off (σ 1)"
    every = row["recycle_every"]
    recycling = (f"every {every} epoch(s)" if every else "never") if row["recycling"] else "off (one fixed set)"
    return threshold, stddev, recycling


def _markdown(rows: list[dict]) -> str:
    headers = ["pipeline", "variant", "checkpoint", "filter", "expansion", "recycling", "CAS val", "CAS test", "vs GaFi", "seeds"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cas = _pct(row["cas_test"]) + (f" ± {_pct(row['cas_test_std'])}" if row["cas_test"] is not None else "")
        delta = "-" if row["delta_test"] is None or row["variant"] == FULL.name else f"{100 * row['delta_test']:+.2f} pp"
        cells = [row["pipeline"], row["label"], _plain(row["checkpoint"]), *_knobs(row), _pct(row["cas_val"]), cas, delta, str(row["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _latex(rows: list[dict]) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}), accuracies in %."""
    lines = [
        r"\begin{tabular}{lllllrr}",
        r"\toprule",
        r"Pipeline & Variant & Filter & Expansion & Recycling & CAS (\%) & $\Delta$ (pp) \\",
        r"\midrule",
    ]
    for row in rows:
        knobs = [_latex_escape(k).replace("σ", r"$\sigma$") for k in _knobs(row)]
        cas = _num(row["cas_test"]) + (rf" $\pm$ {_num(row['cas_test_std'])}" if row["cas_test"] is not None else "")
        delta = "--" if row["delta_test"] is None or row["variant"] == FULL.name else f"{100 * row['delta_test']:+.2f}"
        lines.append(" & ".join([_latex_escape(row["pipeline"]), _latex_escape(row["label"]), *knobs, cas, delta]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)
