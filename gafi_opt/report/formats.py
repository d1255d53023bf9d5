"""The export's formats: markdown and LaTeX (percentages), CSV and JSON (fractions at full precision)."""

from __future__ import annotations

import csv
import io
import json
import math

from gafi_opt.errors import GafiError
from gafi_opt.report.rows import EXPORT_KEYS, QUALITY_METRICS, QUALITY_PARTS

FORMATS = ("markdown", "csv", "latex", "json")


def format_rows(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "markdown":
        return markdown_table(rows)
    if fmt == "csv":
        return csv_table(rows)
    if fmt == "latex":
        return latex_table(rows)
    raise GafiError(f"unknown export format {fmt!r} (use {', '.join(FORMATS)})")


def _has_knobs(rows: list[dict]) -> bool:
    """Whether any row is a diffusion generator's (only then do tables show sampler, guidance and steps)."""
    return any(row.get("sampler") is not None for row in rows)


def markdown_table(rows: list[dict]) -> str:
    headers = ["pipeline", "dataset", "mode", "real fraction", "ratio", "checkpoint", "stddev", "threshold", "CAS val", "search best val", "CAS test", "synthetic baseline", "real", "real-only", "gap closed", "gap left"]
    quality = any(row.get("fd") is not None for row in rows)  # metrics columns once any row has them
    if quality:
        headers += [f"{name}: baseline → GaFi (real)" for name in ("FD", "precision", "recall")]
    knobs = _has_knobs(rows)
    if knobs:
        headers[6:6] = ["sampler", "guidance", "steps"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cas = _pct(row["cas_test"]) + (f" ± {_pct(row['cas_test_std'])}" if row["cas_test_std"] is not None else "")
        if row["selection"] == "test":
            cas += " (test-selected)"
        cells = [
            row["pipeline"] + (f" (K={row['generators']})" if row.get("generators") else ""),  # multigen rows
            row["dataset"],
            row.get("mode") or "-",
            _plain(row.get("real_fraction")),
            _plain(row.get("augment_ratio")),
            _plain(row["checkpoint"]),
            _plain(row["stddev"]),
            _plain(row["threshold"]),
            _pct(row["cas_val"]),
            _pct(row.get("search_val")),
            cas,
            _pct(row["synthetic_baseline_test"]),
            _pct(row["real_test"]),
            _pct(row.get("real_only_test")) + (f" ± {_pct(row['real_only_test_std'])}" if row.get("real_only_test_std") is not None else ""),
            _pct(row["gap_closed"]),
            _pct(row.get("remaining_gap")),
        ]
        if quality:
            cells += [quality_cell(row, metric) for metric in QUALITY_METRICS]
        if knobs:
            cells[6:6] = [row.get("sampler") or "-", _plain(row.get("guidance")), _plain(row.get("steps"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def quality_cell(row: dict, metric: str, arrow: str = "→") -> str:
    """A distribution metric as `synthetic baseline → GaFi (real yardstick)`; - when not measured."""
    values = [row.get(prefix + metric) for prefix in QUALITY_PARTS]  # final, baseline, real
    if all(v is None for v in values):
        return "-"
    final, baseline, real = (_metric(v, metric) for v in values)
    return f"{baseline} {arrow} {final} (real {real})"


def _metric(value, metric: str) -> str:
    # FD is in (squared) units of the features; precision and recall are fractions, 3 decimals resolve 1 image in 1000.
    return "-" if value is None else f"{value:.2f}" if metric == "fd" else f"{value:.3f}"


def csv_table(rows: list[dict]) -> str:
    """Every key of the rows as a column, accuracies as fractions at full precision, empty cells for None."""
    columns = list(EXPORT_KEYS) + [key for row in rows for key in row if key not in EXPORT_KEYS]
    columns = list(dict.fromkeys(columns))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else _csv_value(row[key]) for key in columns})
    return out.getvalue().rstrip("\n")


def _csv_value(value):
    if isinstance(value, float) and math.isnan(value):
        return ""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_table(rows: list[dict]) -> str:
    """A booktabs `tabular` shaped like the paper's table (needs \\usepackage{booktabs}); accuracies in %.

    Columns that would be empty for every row (pipeline names equal to the dataset,
    generator count, augment mode, real-only baseline) are left out.
    """
    columns = _latex_columns(rows)
    align = "".join(a for _, _, a in columns)
    lines = [r"\begin{tabular}{" + align + "}", r"\toprule", " & ".join(h for h, _, _ in columns) + r" \\", r"\midrule"]
    for row in rows:
        lines.append(" & ".join(cell(row) for _, cell, _ in columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if any(row.get("selection") == "test" for row in rows):
        lines.append(r"% $^\dagger$ hyperparameters selected on the test split (the paper's protocol)")
    if any(row.get("fd") is not None for row in rows):
        lines.append("% FD, precision, recall: synthetic baseline -> GaFi (real train subset), against real val in the filter classifier's features")
    return "\n".join(lines)


def _latex_columns(rows: list[dict]) -> list[tuple]:
    """(header, cell function, alignment) for each column the rows need."""
    columns = []
    if any(row.get("pipeline") != row.get("dataset") or row.get("generators") for row in rows):
        columns.append(("Pipeline", lambda r: _latex_escape(str(r.get("pipeline"))), "l"))
    columns.append(("Dataset", lambda r: _latex_escape(str(r.get("dataset"))), "l"))
    if any(row.get("generators") for row in rows):
        columns.append(("Generators", lambda r: str(r.get("generators") or 1), "r"))
    if any(row.get("mode") == "augment" for row in rows):
        columns += [
            ("Mode", lambda r: _latex_escape(r.get("mode") or "--"), "l"),
            ("Real fraction", lambda r: _tex_plain(r.get("real_fraction")), "r"),
            ("Ratio", lambda r: _tex_plain(r.get("augment_ratio")), "r"),
        ]
    columns.append(("Checkpoint", lambda r: _tex_plain(r.get("checkpoint")), "r"))
    if _has_knobs(rows):
        columns += [
            ("Sampler", lambda r: _tex_plain(r.get("sampler")), "l"),
            ("Guidance", lambda r: _tex_plain(r.get("guidance")), "r"),
            ("Steps", lambda r: _tex_plain(r.get("steps")), "r"),
        ]
    columns += [
        (r"$\sigma$", lambda r: _tex_plain(r.get("stddev")), "r"),
        ("Threshold", lambda r: _tex_plain(r.get("threshold")), "r"),
        (r"CAS (\%)", _latex_cas, "r"),
        (r"Synthetic baseline (\%)", lambda r: _num(r.get("synthetic_baseline_test")), "r"),
        (r"Real (\%)", lambda r: _num(r.get("real_test")), "r"),
    ]
    if any(row.get("real_only_test") is not None for row in rows):
        columns.append((r"Real-only (\%)", lambda r: _num_std(r.get("real_only_test"), r.get("real_only_test_std")), "r"))
    columns += [
        (r"Gap closed (\%)", lambda r: _num(r.get("gap_closed")), "r"),
        ("Gap left (pp)", lambda r: _num(r.get("remaining_gap")), "r"),
    ]
    if any(row.get("fd") is not None for row in rows):
        columns += [(name, _latex_quality(metric), "r") for name, metric in (("FD", "fd"), ("Precision", "precision"), ("Recall", "recall"))]
    return columns


def _latex_quality(metric: str):
    """The cell function of a metric's column: `baseline $\rightarrow$ GaFi (real)`."""

    def cell(row: dict) -> str:
        final, baseline, real = (row.get(prefix + metric) for prefix in QUALITY_PARTS)
        if final is None and baseline is None:
            return "--"
        text = lambda v: "--" if v is None else _metric(v, metric)  # noqa: E731
        return rf"{text(baseline)} $\rightarrow$ {text(final)} ({text(real)})"

    return cell


def _latex_cas(row: dict) -> str:
    cas = _num_std(row.get("cas_test"), row.get("cas_test_std"))
    return cas + r"$^\dagger$" if row.get("selection") == "test" else cas


def _num_std(value, std) -> str:
    return _num(value) + (rf" $\pm$ {_num(std)}" if value is not None and std is not None else "")


def _latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(char, char) for char in text)


def _tex_plain(value) -> str:
    return "--" if value is None else _latex_escape(_plain(value))


def _num(value) -> str:
    """A fraction as a percentage with two decimals, without the % sign (LaTeX); -- when missing."""
    return "--" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _pct(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}%"


def _plain(value) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
