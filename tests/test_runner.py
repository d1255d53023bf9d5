"""One runner for the CLI, the Python API and `scarce`: a pipeline started anywhere can be finished by a plain worker."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import optuna
from conftest import DIGITS, ROOT, tiny_overrides
from optuna.trial import TrialState

from gafi_opt.pipeline import Pipeline
from gafi_opt.runner import PREPARED_ATTR
from gafi_opt.search.stages import STAGES


def _finished(url: str, study_name: str) -> int:
    try:
        study = optuna.load_study(study_name=study_name, storage=url)
    except KeyError:
        return 0
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def test_a_pipeline_started_through_the_python_api_and_interrupted_is_finished_by_a_plain_worker(tmp_path):
    url = f"sqlite:///{tmp_path / 'api.db'}"
    overrides = [*tiny_overrides(tmp_path / "run", name="api"), "cas.epochs=3"]
    script = textwrap.dedent(
        f"""
        import gafi_opt
        spec = gafi_opt.load_spec({str(DIGITS)!r}, {overrides!r})
        gafi_opt.run_pipeline(spec, {url!r}, "cpu", progress=False)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while _finished(url, "api/checkpoint") < 1:  # preparation done, the first search trial finished
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the API run never finished a checkpoint trial"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) != 0  # interrupted mid-pipeline
    pipeline = Pipeline.load(url, "api")
    assert pipeline.current_stage() is not None and PREPARED_ATTR in pipeline.attrs()

    worker = subprocess.run(
        [sys.executable, "-m", "gafi_opt.cli", "worker", "--storage", url, "--pipeline", "api", "--wait-prepared", "0", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    pipeline = Pipeline.load(url, "api")
    assert pipeline.current_stage() is None
    for stage in STAGES:
        states = [t.state for t in pipeline.stage_study(stage).get_trials(deepcopy=False)]
        assert TrialState.RUNNING not in states and TrialState.WAITING not in states, (stage, states)


def test_a_storage_written_by_an_older_gafi_opt_is_a_one_line_error(tmp_path):
    from click.testing import CliRunner

    from gafi_opt.cli import main
    from gafi_opt.pipeline.store import FORMAT_ATTR
    from gafi_opt.testing.fixed_work import fixed_work_spec

    url = f"sqlite:///{tmp_path / 'old.db'}"
    Pipeline.create_or_load(fixed_work_spec("old", 2), url)
    root = optuna.load_study(study_name="old", storage=url)
    root._storage.set_study_user_attr(root._study_id, FORMAT_ATTR, None)  # as gafi-opt 0.1 left it: no format mark
    for command in (["status"], ["export"], ["worker", "--pipeline", "old", "--wait-prepared", "0"]):
        result = CliRunner().invoke(main, [*command, "--storage", url])
        assert result.exit_code == 2, (command, result.output)
        assert "was written by gafi-opt 0.1" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
