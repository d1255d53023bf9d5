"""Tools that speak Optuna: $GAFI_STORAGE on every command, JSON from `status` and `run`, and Optuna's own
CLI (and a plain optuna.load_study) on every kind of study gafi-opt writes, without a traceback."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import click
import optuna
import pytest
from click.testing import CliRunner
from conftest import DIGITS, tiny_overrides
from optuna.trial import TrialState

from gafi_opt.cli import STORAGE_ENV, main
from gafi_opt.pipeline import Pipeline, pipeline_names
from gafi_opt.pipeline.store import READABLE_SPEC_ATTR, SPEC_ATTR
from gafi_opt.report import EXPORT_KEYS, summary_row
from gafi_opt.report.result import CLAIM_PREFIX, RESULT_ATTR, record_result, result_trial
from gafi_opt.runner import STORAGE_ENV as RUNNER_STORAGE_ENV
from gafi_opt.search.stages import STAGES
from gafi_opt.spec import Spec, spec_from_dict
from gafi_opt.storages import open_storage, set_once, slots
from gafi_opt.testing import fixed_work
from gafi_opt.testing.fixed_work import fixed_work_spec

pytestmark = pytest.mark.timeout(300)
OPTUNA = Path(sys.executable).with_name("optuna")  # Optuna's console script, beside this interpreter


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


# Many commands of Optuna's CLI in one process (each `optuna` process spends seconds importing): its
# entry point `optuna.cli.main`, which the script runs, called once per command line.
CLI_BATCH = """
import contextlib, io, json, sys
from optuna.cli import main

answers = []
for argv in json.load(sys.stdin):
    sys.argv, out = ["optuna", *argv], io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code, error = main(), None
    except Exception as exc:  # what the script would end in: a traceback
        code, error = None, f"{type(exc).__name__}: {exc}"
    answers.append({"argv": argv, "code": code, "stdout": out.getvalue(), "error": error})
json.dump(answers, sys.stdout)
"""


def optuna_cli(*args) -> subprocess.CompletedProcess:
    """The `optuna` script itself."""
    return subprocess.run([str(OPTUNA), *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def optuna_cli_batch(commands: list[list[str]]) -> list[dict]:
    """Each command line through Optuna's CLI entry point, in one subprocess: code, stdout, error."""
    result = subprocess.run([sys.executable, "-c", CLI_BATCH], input=json.dumps(commands), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def answered(answer: dict):
    """The JSON a command printed, after checking it ran to the end without an exception."""
    assert answer["code"] == 0 and answer["error"] is None, answer
    return json.loads(answer["stdout"])


def copy_sqlite(url: str, tmp_path: Path) -> str:
    """A consistent copy of an SQLite storage (WAL included), so a test can change it."""
    source, target = sqlite3.connect(url.removeprefix("sqlite:///")), sqlite3.connect(tmp_path / "copy.db")
    with target:
        source.backup(target)
    source.close()
    target.close()
    return f"sqlite:///{tmp_path / 'copy.db'}"


# ------------------------------------------------------------------ $GAFI_STORAGE


def storage_commands() -> list[str]:
    return sorted(name for name, command in main.commands.items() if any(p.name == "storage" for p in command.params))


@pytest.mark.parametrize("name", storage_commands())
def test_every_storage_option_reads_gafi_storage(name, monkeypatch):
    """Click parses each command's line with only $GAFI_STORAGE naming the storage, and --help says so."""
    url = "postgresql+psycopg://someone@db-host/gafi"
    monkeypatch.setenv(STORAGE_ENV, url)
    command = main.commands[name]
    args = []
    for param in command.params:  # the least each command needs besides the storage
        if param.required and param.name != "storage":
            args += [str(DIGITS)] if isinstance(param, click.Argument) else [param.opts[0], "x"]
    ctx = command.make_context(name, args)
    assert ctx.params["storage"] == url
    help_text = " ".join(CliRunner().invoke(main, [name, "--help"]).output.split())
    assert f"Also read from ${STORAGE_ENV}" in help_text


def test_the_storage_variable_is_the_one_local_workers_get():
    assert STORAGE_ENV == RUNNER_STORAGE_ENV == "GAFI_STORAGE"
    assert set(storage_commands()) >= {"run", "worker", "storage-proxy", "status", "export", "plot", "dashboard", "scarce", "multigen"}


def test_commands_with_only_gafi_storage_set(tiny_pipeline, tmp_path):
    """status (the README's multi-machine recipe), export, plot and a worker, each told the storage by the environment alone."""
    spec, url = tiny_pipeline
    runner = CliRunner(env={STORAGE_ENV: url})
    status = runner.invoke(main, ["status"])
    assert status.exit_code == 0, status.output
    assert f"pipeline {spec.name}: complete" in status.stdout
    export = runner.invoke(main, ["export", "--format", "json"])
    assert export.exit_code == 0, export.output
    assert [row["pipeline"] for row in json.loads(export.stdout)] == [spec.name]
    plot = runner.invoke(main, ["plot", "--pipeline", spec.name, "-o", str(tmp_path / "figures"), "--plotlyjs", "directory"])
    assert plot.exit_code == 0, plot.output
    assert (tmp_path / "figures" / "checkpoint-cas.html").exists()
    worker = runner.invoke(main, ["worker", "--pipeline", spec.name, "--quiet"])  # a finished pipeline: nothing to do
    assert worker.exit_code == 0, worker.output
    missing = CliRunner().invoke(main, ["status"])
    assert missing.exit_code == 2
    assert missing.output.startswith(f"gafi-opt: error: Missing option '--storage' (or set ${STORAGE_ENV})")


def test_run_takes_gafi_storage_and_prints_the_export_row_as_json(tiny_pipeline, tmp_path):
    """`run` with $GAFI_STORAGE writes there, not to the spec's default; --format json prints the export's row."""
    spec, _ = tiny_pipeline
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in ("filter.pt", "data.json"):  # the tiny pipeline's models: only the stages run again
        shutil.copy(Path(spec.run_dir) / name, run_dir / name)
    shutil.copytree(Path(spec.run_dir) / "generator", run_dir / "generator")
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    args = ["run", str(DIGITS), "--quiet", "--format", "json", *sets(tiny_overrides(run_dir, name="envrun"))]
    result = CliRunner(env={STORAGE_ENV: url}).invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not (run_dir / "gafi.db").exists()  # the spec's default storage was not used
    (row,) = json.loads(result.stdout)
    assert set(EXPORT_KEYS) <= set(row)
    assert row == summary_row(Pipeline.load(url, "envrun"))
    assert row["pipeline"] == "envrun" and row["cas_val"] is not None and row["seeds"] == 2


def test_status_json(tiny_pipeline):
    spec, url = tiny_pipeline
    result = CliRunner().invoke(main, ["status", "--storage", url, "--format", "json"])
    assert result.exit_code == 0, result.output
    (status,) = json.loads(result.stdout)
    assert status["pipeline"] == spec.name and status["complete"] is True and status["current_stage"] is None
    assert [row["stage"] for row in status["stages"]] == list(STAGES)
    storage = open_storage(url)
    for row in status["stages"]:
        trials = optuna.load_study(study_name=f"{spec.name}/{row['stage']}", storage=storage).trials
        assert row["state"] == "done"
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
            assert row[state.name.lower()] == sum(t.state == state for t in trials), (row, state)
        assert row["epochs"] == sum(t.user_attrs.get("classifier_epochs", 0) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    assert status["classifier_epochs"] == sum(row["epochs"] for row in status["stages"]) > 0


# ------------------------------------------------------------------ the root study as Optuna shows it


def test_a_finished_pipeline_root_holds_its_result_trial(tiny_pipeline):
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    root = optuna.load_study(study_name=spec.name, storage=url)  # a plain Optuna storage, as any tool opens it
    (trial,) = root.trials
    row = summary_row(pipeline)
    assert trial.state == TrialState.COMPLETE and trial.system_attrs[RESULT_ATTR] is True
    assert root.best_trial.number == trial.number and trial.value == row["cas_val"]
    assert trial.params == {"checkpoint": row["checkpoint"], "stddev": row["stddev"], "threshold": row["threshold"]}
    assert trial.user_attrs == row
    assert root.direction == optuna.study.StudyDirection.MAXIMIZE and root.metric_names == ["final val CAS"]
    assert record_result(pipeline).number == trial.number and len(root.trials) == 1  # asking again adds nothing
    # gafi-opt counts stage trials only: every trial of the storage but the root's is in `status`.
    statuses = json.loads(CliRunner().invoke(main, ["status", "--storage", url, "--format", "json"]).stdout)
    counted = sum(row[k] for s in statuses for row in s["stages"] for k in ("complete", "pruned", "fail", "running", "waiting"))
    every = sum(len(optuna.load_study(study_name=n, storage=url).trials) for n in optuna.get_all_study_names(url))
    assert counted == every - 1


def test_the_spec_is_stored_readable(tiny_pipeline):
    spec, url = tiny_pipeline
    attrs = optuna.load_study(study_name=spec.name, storage=url).user_attrs
    readable = attrs[READABLE_SPEC_ATTR]
    assert isinstance(readable, dict) and readable["cas"]["epochs"] == 2 and readable["data"]["source"] == "digits"
    assert readable == json.loads(attrs[SPEC_ATTR])
    assert spec_from_dict(readable, "stored") == Spec.from_json(attrs[SPEC_ATTR]) == spec
    Pipeline.create_or_load(spec, url)  # the same spec still opens the pipeline


def test_a_pipeline_stored_without_the_readable_spec_gets_it(tmp_path):
    """A root written before the readable copy existed (gafi_spec and the format only) gains it when run again."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    spec = fixed_work_spec("old", 3)
    root = optuna.create_study(study_name="old", storage=url)
    root.set_user_attr("gafi_storage_format", 2)
    root.set_user_attr(SPEC_ATTR, spec.to_json())
    Pipeline.create_or_load(spec, url)
    assert optuna.load_study(study_name="old", storage=url).user_attrs[READABLE_SPEC_ATTR] == json.loads(spec.to_json())


def _without_result_trial(url: str, name: str) -> None:
    """Delete the root's trials and claims (a pipeline finished by a gafi-opt that wrote none), straight from Optuna's tables."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        (study_id,) = db.execute("SELECT study_id FROM studies WHERE study_name = ?", (name,)).fetchone()
        ids = [row[0] for row in db.execute("SELECT trial_id FROM trials WHERE study_id = ?", (study_id,))]
        for table in ("trial_params", "trial_values", "trial_user_attributes", "trial_system_attributes", "trial_intermediate_values"):
            db.executemany(f"DELETE FROM {table} WHERE trial_id = ?", [(i,) for i in ids])
        db.execute("DELETE FROM trials WHERE study_id = ?", (study_id,))
        db.execute("DELETE FROM study_system_attributes WHERE study_id = ? AND key LIKE ?", (study_id, CLAIM_PREFIX + "%"))


def test_one_result_trial_however_many_workers_finish_together(tiny_pipeline, tmp_path):
    spec, url = tiny_pipeline
    url = copy_sqlite(url, tmp_path)
    _without_result_trial(url, spec.name)
    assert optuna.load_study(study_name=spec.name, storage=url).trials == []
    answers = fixed_work.race("result", url, 0, 3, [spec.name])
    (trial,) = optuna.load_study(study_name=spec.name, storage=url).trials
    assert trial.system_attrs[RESULT_ATTR] and [trial.number] in answers  # the others returned it, or nothing while it was written
    assert all(answer in ([trial.number], []) for answer in answers)


def test_a_claim_whose_writer_died_is_taken_over(tiny_pipeline, tmp_path):
    spec, url = tiny_pipeline
    url = copy_sqlite(url, tmp_path)
    _without_result_trial(url, spec.name)
    pipeline = Pipeline.load(url, spec.name)
    root_id = pipeline.root._study_id
    assert set_once(pipeline.storage, root_id, f"{CLAIM_PREFIX}0", {"by": "someone-writing-now", "at": time.time()})
    assert record_result(pipeline) is None and result_trial(pipeline) is None  # a live writer: leave it to them
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:  # now the claim is an hour old: its writer died
        hour_old = json.dumps({"by": "someone-writing-now", "at": time.time() - 3600})
        db.execute("UPDATE study_system_attributes SET value_json = ? WHERE key = ?", (hour_old, f"{CLAIM_PREFIX}0"))
    trial = record_result(pipeline)
    assert trial is not None and trial.system_attrs[RESULT_ATTR] and len(pipeline.root.trials) == 1
    assert f"{CLAIM_PREFIX}1" in pipeline.storage.get_study_system_attrs(root_id)


# ------------------------------------------------------------------ Optuna's own CLI


def assert_answers(result: subprocess.CompletedProcess, what: str):
    assert result.returncode == 0 and "Traceback" not in result.stderr, f"{what}: {result.stderr[-2000:]}"
    return json.loads(result.stdout)


def test_optuna_cli_on_every_study_of_a_finished_pipeline_and_a_multigen_study(tiny_pipeline, tmp_path):
    spec, url = tiny_pipeline
    url = copy_sqlite(url, tmp_path)  # multigen adds a study: not to the session's pipeline
    result = CliRunner().invoke(main, ["multigen", "--storage", url, "--pipelines", spec.name, "--seeds", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    names = optuna_cli("study-names", "--storage", url, "-f", "json")
    assert sorted(n["name"] for n in assert_answers(names, "study-names")) == sorted(
        [spec.name, f"multigen/{spec.name}"] + [f"{spec.name}/{stage}" for stage in STAGES]
    )
    studies = {s["name"]: s for s in assert_answers(optuna_cli("studies", "--storage", url, "-f", "json"), "studies")}
    assert studies[spec.name]["user_attrs"][READABLE_SPEC_ATTR]["name"] == spec.name
    assert studies[spec.name]["n_trials"] == 1 and studies[spec.name]["direction"] == ["MAXIMIZE"]
    commands = [
        [command, "--study-name", name, "--storage", url, "-f", fmt, *flatten]
        for name in studies
        for command in ("trials", "best-trial", "best-trials")
        for fmt, flatten in (("json", []), ("table", ["--flatten"]))
    ]
    for answer in optuna_cli_batch(commands):
        assert answer["code"] == 0 and answer["error"] is None, answer
    best = assert_answers(optuna_cli("best-trial", "--study-name", spec.name, "--storage", url, "-f", "json"), "best-trial root")
    row = summary_row(Pipeline.load(url, spec.name))
    assert best["value"] == {"final val CAS": row["cas_val"]} and best["user_attrs"]["cas_test"] == row["cas_test"]
    assert best["params"] == {"checkpoint": row["checkpoint"], "stddev": row["stddev"], "threshold": row["threshold"]}


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_optuna_cli_on_a_stage_with_waiting_failed_running_and_pruned_trials(kind, tmp_path):
    """A stage mid-run: waiting trials that carry fixed_params, a failed one, a running one, a pruned one, a complete one."""
    path = tmp_path / ("gafi.db" if kind == "sqlite" else "gafi.log")
    url = f"sqlite:///{path}" if kind == "sqlite" else f"journal://{path}"
    storage = open_storage(url)
    pipeline = Pipeline.create_or_load(fixed_work_spec("mid", 6), storage)
    study = pipeline.ensure_stage("checkpoint")
    failed = slots.claim(storage, study._study_id)
    slots.fail(storage, failed.trial_id, "error: a test")
    for state in (TrialState.PRUNED, TrialState.COMPLETE):
        claimed = slots.claim(storage, study._study_id)
        trial = optuna.Trial(study, claimed.trial_id)
        value = trial.suggest_categorical("checkpoint", [1, 2, 3, 4, 5, 6])
        trial.report(value / 10, 1)
        study.tell(trial, value / 10 if state == TrialState.COMPLETE else None, state=state)
    slots.claim(storage, study._study_id)  # left running
    cli_storage = str(path) if kind == "journal" else url  # Optuna's CLI names a journal file by its path
    trials, best, best_trials, root_trials, studies = map(
        answered,
        optuna_cli_batch(
            [
                ["trials", "--study-name", "mid/checkpoint", "--storage", cli_storage, "-f", "json", "--flatten"],
                ["best-trial", "--study-name", "mid/checkpoint", "--storage", cli_storage, "-f", "json"],
                ["best-trials", "--study-name", "mid/checkpoint", "--storage", cli_storage, "-f", "json"],
                ["trials", "--study-name", "mid", "--storage", cli_storage, "-f", "json"],
                ["studies", "--storage", cli_storage, "-f", "json"],
            ]
        ),
    )
    assert sorted(t["state"] for t in trials) == ["COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING", "WAITING"]
    assert best["state"] == "COMPLETE" and [t["number"] for t in best_trials] == [best["number"]]
    assert root_trials == [] and sorted(s["name"] for s in studies) == ["mid", "mid/checkpoint"]
    loaded = optuna.load_study(study_name="mid/checkpoint", storage=optuna_storage(kind, path))
    assert len(loaded.trials) == 6 and loaded.best_trial.state == TrialState.COMPLETE


def optuna_storage(kind: str, path: Path):
    if kind == "sqlite":
        return f"sqlite:///{path}"
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def test_a_root_without_a_result_answers_best_trial_as_any_optuna_study_does(tmp_path):
    """Before its final stage completes, a root has no complete trial: Optuna's CLI says so exactly as for a new study of its own."""
    url = f"sqlite:///{tmp_path / 'gafi.db'}"
    Pipeline.create_or_load(fixed_work_spec("early", 3), url)
    optuna.create_study(study_name="plain", storage=url, direction="maximize")
    ours, plain, trials = optuna_cli_batch(
        [["best-trial", "--study-name", name, "--storage", url] for name in ("early", "plain")]
        + [["trials", "--study-name", "early", "--storage", url, "-f", "json"]]
    )
    assert ours["error"] == plain["error"] == "ValueError: Record does not exist."  # Optuna's own answer to a study with no complete trial
    assert answered(trials) == []
    assert pipeline_names(open_storage(url)) == ["early"]
