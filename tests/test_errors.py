"""Bad input: one line naming the problem, exit status 2, no traceback, no finished trial lost."""

import shutil
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from conftest import DIGITS, ROOT, assert_user_error, tiny_overrides

from gafi_opt.cli import main
from gafi_opt.pipeline import Pipeline
from gafi_opt.search.stages import STAGES
from gafi_opt.storages import open_storage


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_missing_study_file(tmp_path):
    assert_user_error(invoke("run", tmp_path / "nope.toml"), "study file not found", "nope.toml")


def test_malformed_study_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[data\nsource = 1")
    assert_user_error(invoke("train-classifier", bad), "not valid TOML", "bad.toml")


def test_unknown_dataset_and_key():
    assert_user_error(invoke("run", DIGITS, "--set", "data.source=imagenet"), "unknown dataset source 'imagenet'")
    assert_user_error(invoke("run", DIGITS, "--set", "cas.colour=red"), "unknown key 'cas.colour'")


def test_absent_data_folder(tmp_path):
    result = invoke("train-classifier", DIGITS, "--set", "data.source=cifar10", "--set", f"data.root={tmp_path / 'cifar'}")
    assert_user_error(result, str(tmp_path / "cifar"))


def test_threshold_and_stddev_out_of_range():
    assert_user_error(invoke("run", DIGITS, "--set", "threshold.values=[0.2, 1.0]"), "threshold.values must lie in [0, 1)")
    assert_user_error(invoke("run", DIGITS, "--set", "stddev.values=[0.0]"), "stddev.values must be numbers > 0")


def test_storage_that_cannot_be_opened(tmp_path):
    result = invoke("status", "--storage", "postgresql+psycopg://alice:hunter2@127.0.0.1:1/nowhere")
    assert_user_error(result, "cannot open storage", "alice:***@127.0.0.1:1")
    assert "hunter2" not in result.output
    assert_user_error(invoke("status", "--storage", "not a url"), "not a storage URL")
    empty = f"sqlite:///{tmp_path}/empty.db"
    open_storage(empty)  # a storage that exists but holds no pipeline
    assert_user_error(invoke("status", "--storage", empty), "no pipelines")


def test_unknown_pipeline(tiny_pipeline):
    spec, url = tiny_pipeline
    assert_user_error(invoke("export", "--storage", url, "--pipeline", "absent"), "no pipeline 'absent'", spec.name)


def test_checkpoint_folder_without_checkpoints(byo_checkpoints, tmp_path):
    folder, overrides = byo_checkpoints
    for path in folder.glob("*.pt"):
        path.unlink()
    assert_user_error(invoke("run", DIGITS, *sets(overrides)), "no generator checkpoints found", str(folder))


def test_checkpoint_that_does_not_fit_the_spec(byo_checkpoints):
    _, overrides = byo_checkpoints
    result = invoke("run", DIGITS, *sets(overrides + ["generator.width=64"]))
    assert_user_error(result, "does not fit the spec's generator")


def test_corrupt_checkpoint(byo_checkpoints):
    folder, overrides = byo_checkpoints
    (folder / "epoch_0003.pt").write_bytes(b"this is not a checkpoint")
    assert_user_error(invoke("run", DIGITS, *sets(overrides)), "cannot read checkpoint", "epoch_0003.pt")


def test_pickled_code_in_a_checkpoint_is_never_executed(byo_checkpoints, tmp_path):
    folder, overrides = byo_checkpoints
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"weight": Exploit()}, folder / "epoch_0003.pt")
    assert_user_error(invoke("run", DIGITS, *sets(overrides)), "cannot read checkpoint")
    assert not marker.exists()


def test_an_error_keeps_finished_trials(tiny_pipeline, tmp_path):
    spec, url = tiny_pipeline
    pipeline = Pipeline.load(url, spec.name)
    before = {stage: len(pipeline.finished_trials(stage)) for stage in STAGES}
    backup = tmp_path / "epoch_0003.pt"
    checkpoint = spec.run_path / "generator" / "epoch_0003.pt"
    shutil.copy(checkpoint, backup)
    try:
        checkpoint.write_bytes(b"\x00" * 10)
        result = invoke("run", DIGITS, "--quiet", *sets(tiny_overrides(spec.run_path, spec.name)))
        assert_user_error(result, "cannot read checkpoint")
    finally:
        shutil.copy(backup, checkpoint)
    after = {stage: len(Pipeline.load(url, spec.name).finished_trials(stage)) for stage in STAGES}
    assert after == before


def test_real_process_exit_status_and_no_traceback(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "gafi_opt.cli", "run", str(DIGITS), "--set", "stddev.values=[-1.0]"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert process.returncode == 2
    assert process.stderr.strip().count("\n") == 0 and "Traceback" not in process.stderr
    assert "stddev.values must be numbers > 0" in process.stderr


def test_a_reader_that_stops_early_is_not_an_error(tiny_pipeline):
    """`gafi-opt status | head -1`: the closed pipe ends the command quietly, status 0."""
    _, url = tiny_pipeline
    command = [sys.executable, "-m", "gafi_opt.cli", "status", "--storage", url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    process.stdout.close()  # before the command has written anything
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert err.decode().strip() == ""


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["run", str(DIGITS), "--threads", "0"], "'--threads': 0 is not in the range"),
        (["run"], "Missing argument 'STUDY'"),
        (["run", str(DIGITS), "--nope"], "No such option '--nope'"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["worker", "--pipeline", "digits"], "Missing option '--storage'"),
    ],
)
def test_command_line_mistakes_get_one_line_too(args, fragment, monkeypatch):
    monkeypatch.delenv("GAFI_STORAGE", raising=False)
    result = CliRunner().invoke(main, args)
    assert_user_error(result, fragment, "--help')")


@pytest.mark.parametrize("command", [["status"], ["export"], ["worker", "--pipeline", "digits"], ["dashboard", "--port", "0"]])
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_mistyped_storage_path_is_an_error_not_a_new_storage(command, kind, tmp_path):
    path = tmp_path / ("typo.db" if kind == "sqlite" else "typo.log")
    url = f"sqlite:///{path}" if kind == "sqlite" else f"journal://{path}"
    result = CliRunner().invoke(main, [*command, "--storage", url])
    assert_user_error(result, f"no storage at {path}")
    assert not path.exists()
