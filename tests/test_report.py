"""`gafi-opt export`: every format, read back, carries the numbers that are in the storage."""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
import subprocess

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from gafi_opt.cli import main
from gafi_opt.report.formats import latex_table
from gafi_opt.storages import open_storage

SEARCHED = ("checkpoint", "stddev", "threshold")


def storage_truth(url: str, name: str) -> dict:
    """The table's numbers straight from Optuna, without gafi-opt's report code."""
    storage = open_storage(url)

    def complete(stage):
        return optuna.load_study(study_name=f"{name}/{stage}", storage=storage).get_trials(states=(TrialState.COMPLETE,))

    truth = {}
    for stage in SEARCHED:  # each stage's choice, as its rule froze it in the stage study
        study = optuna.load_study(study_name=f"{name}/{stage}", storage=storage)
        truth[stage] = json.loads(storage.get_study_system_attrs(study._study_id)["gafi:tas:choice"])["value"]
    final = complete("final")
    tests = [t.user_attrs["test_acc"] for t in final]
    truth["cas_val"] = statistics.fmean(t.user_attrs["val_acc"] for t in final)
    truth["cas_test"] = statistics.fmean(tests)
    truth["cas_test_std"] = statistics.stdev(tests)
    truth["synthetic_baseline_test"] = statistics.fmean(t.user_attrs["test_acc"] for t in complete("baseline"))
    truth["real_test"] = optuna.load_study(study_name=name, storage=storage).user_attrs["real_test"]
    truth["remaining_gap"] = truth["real_test"] - truth["cas_test"]
    return truth


def export(url: str, fmt: str, tmp_path) -> str:
    out = tmp_path / f"table.{fmt}"
    result = CliRunner().invoke(main, ["export", "--storage", url, "--format", fmt, "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out.read_text()


@pytest.fixture(scope="module")
def truth(tiny_pipeline):
    spec, url = tiny_pipeline
    return storage_truth(url, spec.name)


def test_json_matches_storage(tiny_pipeline, truth, tmp_path):
    spec, url = tiny_pipeline
    (row,) = json.loads(export(url, "json", tmp_path))
    assert row["pipeline"] == spec.name and row["dataset"] == "digits"
    for key, value in truth.items():
        assert row[key] == pytest.approx(value, abs=1e-12), key


def test_csv_matches_storage(tiny_pipeline, truth, tmp_path):
    spec, url = tiny_pipeline
    text = export(url, "csv", tmp_path)
    (row,) = list(csv.DictReader(text.splitlines()))
    assert row["pipeline"] == spec.name and row["dataset"] == "digits"
    for key, value in truth.items():
        assert float(row[key]) == pytest.approx(value, abs=1e-12), key  # full precision, fractions
    assert int(row["checkpoint"]) == truth["checkpoint"]


def test_markdown_matches_storage(tiny_pipeline, truth, tmp_path):
    spec, url = tiny_pipeline
    lines = export(url, "markdown", tmp_path).strip().splitlines()
    assert len(lines) == 3 and set(lines[1].replace("|", "")) == {"-"}
    cells = dict(zip(_md_cells(lines[0]), _md_cells(lines[2])))
    assert cells["pipeline"] == spec.name
    assert cells["checkpoint"] == str(truth["checkpoint"])
    assert float(cells["stddev"]) == pytest.approx(truth["stddev"])
    assert float(cells["threshold"]) == pytest.approx(truth["threshold"])
    cas, std = re.fullmatch(r"([\d.]+)% ± ([\d.]+)%", cells["CAS test"]).groups()
    assert float(cas) == pytest.approx(100 * truth["cas_test"], abs=0.005)
    assert float(std) == pytest.approx(100 * truth["cas_test_std"], abs=0.005)
    for header, key in (("CAS val", "cas_val"), ("synthetic baseline", "synthetic_baseline_test"), ("real", "real_test"), ("gap left", "remaining_gap")):
        assert float(cells[header].rstrip("%")) == pytest.approx(100 * truth[key], abs=0.005), header


def _md_cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_latex(text: str) -> list[dict[str, str]]:
    """Check a booktabs tabular strictly and return its rows as {header: cell}."""
    lines = [line for line in text.strip().splitlines() if not line.startswith("%")]
    match = re.fullmatch(r"\\begin\{tabular\}\{([lcr]+)\}", lines[0])
    assert match, lines[0]
    columns = len(match.group(1))
    assert lines[1] == r"\toprule" and lines[3] == r"\midrule"
    assert lines[-2] == r"\bottomrule" and lines[-1] == r"\end{tabular}"
    assert text.count(r"\toprule") == text.count(r"\midrule") == text.count(r"\bottomrule") == 1
    rows = []
    for line in [lines[2]] + lines[4:-2]:
        assert line.endswith(r" \\"), line
        cells = [c.strip() for c in re.split(r"(?<!\\)&", line.removesuffix(r"\\"))]
        assert len(cells) == columns, line
        for cell in cells:
            assert not re.search(r"(?<!\\)[%#_]", cell), cell  # specials escaped
            assert len(re.findall(r"(?<!\\)\$", cell)) % 2 == 0, cell  # math balanced
        rows.append(cells)
    header, *body = rows
    return [dict(zip(header, row)) for row in body]


def test_latex_matches_storage(tiny_pipeline, truth, tmp_path):
    _, url = tiny_pipeline
    (row,) = parse_latex(export(url, "latex", tmp_path))
    assert row["Dataset"] == "digits"
    assert row["Checkpoint"] == str(truth["checkpoint"])
    assert float(row[r"$\sigma$"]) == pytest.approx(truth["stddev"])
    assert float(row["Threshold"]) == pytest.approx(truth["threshold"])
    cas, std = re.fullmatch(r"([\d.]+) \$\\pm\$ ([\d.]+)", row[r"CAS (\%)"]).groups()
    assert float(cas) == pytest.approx(100 * truth["cas_test"], abs=0.005)
    assert float(std) == pytest.approx(100 * truth["cas_test_std"], abs=0.005)
    assert float(row[r"Synthetic baseline (\%)"]) == pytest.approx(100 * truth["synthetic_baseline_test"], abs=0.005)
    assert float(row[r"Real (\%)"]) == pytest.approx(100 * truth["real_test"], abs=0.005)
    assert float(row["Gap left (pp)"]) == pytest.approx(100 * truth["remaining_gap"], abs=0.005)


TRICKY_ROWS = [
    {"pipeline": "cifar_10 #2", "dataset": "cifar10", "generators": 2, "mode": "augment", "real_fraction": 0.1, "augment_ratio": 2.0, "checkpoint": 120, "stddev": 1.25, "threshold": 0.3, "cas_test": 0.8012,
     "cas_test_std": 0.004, "synthetic_baseline_test": 0.71, "real_test": 0.93, "gap_closed": 0.41, "remaining_gap": 0.1288, "selection": "test"},
    {"pipeline": "50% & more", "dataset": "cifar10", "checkpoint": None, "stddev": None, "threshold": None, "cas_test": None,
     "cas_test_std": None, "synthetic_baseline_test": None, "real_test": 0.93, "gap_closed": None, "remaining_gap": None, "selection": "val"},
]


def test_latex_escapes_and_marks_test_selection():
    text = latex_table(TRICKY_ROWS)
    rows = parse_latex(text)
    assert [r["Pipeline"] for r in rows] == [r"cifar\_10 \#2", r"50\% \& more"]
    assert rows[0][r"CAS (\%)"] == r"80.12 $\pm$ 0.40$^\dagger$"
    assert rows[1]["Checkpoint"] == "--" and rows[1][r"CAS (\%)"] == "--"
    # Columns only some rows need: multi-generator count, augment mode.
    assert [r["Generators"] for r in rows] == ["2", "1"]
    assert [r["Mode"] for r in rows] == ["augment", "--"] and rows[0]["Ratio"] == "2"
    assert text.splitlines()[-1].startswith(r"% $^\dagger$")


@pytest.mark.skipif(not shutil.which("pdflatex"), reason="no pdflatex on this machine (the tabular structure is checked above)")
def test_latex_compiles(tiny_pipeline, tmp_path):
    _, url = tiny_pipeline
    table = export(url, "latex", tmp_path) + latex_table(TRICKY_ROWS)
    document = tmp_path / "table.tex"
    document.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + table + "\n\\end{document}\n")
    result = subprocess.run(["pdflatex", "-halt-on-error", "-interaction=nonstopmode", document.name], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]


def test_export_errors_are_one_line(tiny_pipeline, tmp_path):
    _, url = tiny_pipeline
    result = CliRunner().invoke(main, ["export", "--storage", url, "--format", "latex", "-o", str(tmp_path / "missing" / "t.tex")])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if not line.startswith("gafi-opt: warning: ")]  # the tiny models warn
    assert errors[0].startswith("gafi-opt: error: cannot write") and len(errors) == 1
    result = CliRunner().invoke(main, ["export", "--storage", url, "--format", "xlsx"])
    assert result.exit_code == 2 and "xlsx" in result.output
