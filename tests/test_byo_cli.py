"""Bring your own generator, through `gafi-opt run`: a misfit is one line and exit 2 before anything trains."""

from __future__ import annotations

import byo_generator
import optuna
import pytest
import torch
from click.testing import CliRunner
from conftest import DIGITS, tiny_overrides

from gafi_opt.cli import main
from gafi_opt.data import load_data
from gafi_opt.errors import GafiError
from gafi_opt.runner import check_checkpoints
from gafi_opt.spec import load_spec

LATENT = 16


def _checkpoints(folder, **options):
    """State dicts of the test factory's generator for the digits shape, as epochs 1 and 2."""
    folder.mkdir(parents=True, exist_ok=True)
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        module = byo_generator.make(latent_dim=LATENT, num_classes=10, image_shape=(1, 8, 8), **options)
        torch.save(module.state_dict(), folder / f"gen_epoch{epoch}.pt")
    return folder


def _overrides(tmp_path, folder, options: str) -> list[str]:
    return [
        *tiny_overrides(tmp_path / "run", "byo"),
        "generator.arch=byo_generator:make",
        f"generator.latent_dim={LATENT}",
        f"generator.checkpoints={folder}",
        f"generator.options={options}",
        "checkpoint.values=[1, 2]",
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{ scale = 3.0 }", r"generator output range \[-?\d.*\] is outside \[-1, 1\]"),
        ("{ claim_classes = 11 }", "generator has 11 classes, data has 10"),
        ("{ out_side = 16 }", r"generator output shape is \(10, 1, 16, 16\), expected \(10, 1, 8, 8\)"),
    ],
)
def test_a_misfit_generator_stops_the_run_before_any_training(tmp_path, options, message):
    import re

    # The checkpoints are made with the same options, so they load; only the check can catch the misfit.
    parsed = {"{ scale = 3.0 }": {"scale": 3.0}, "{ claim_classes = 11 }": {"claim_classes": 11}, "{ out_side = 16 }": {"out_side": 16}}[options]
    folder = _checkpoints(tmp_path / "mine", **parsed)
    overrides = _overrides(tmp_path, folder, options)
    storage = f"sqlite:///{tmp_path / 'gafi.db'}"
    args = ["run", str(DIGITS), "--quiet", "--storage", storage] + [a for o in overrides for a in ("--set", o)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gafi-opt: error: ") and re.search(message, lines[0]), result.stderr
    assert "Traceback" not in result.output
    # Nothing was trained and no stage (so no trial) was created.
    assert not (tmp_path / "run" / "filter.pt").exists()
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)] == ["byo"]


def test_a_fitting_generator_passes_the_check(tmp_path):
    folder = _checkpoints(tmp_path / "good")
    spec = load_spec(DIGITS, _overrides(tmp_path, folder, "{}"))
    check_checkpoints(spec, load_data(spec.data), "cpu")  # no error


def test_a_missing_checkpoint_is_named_before_any_training(tmp_path):
    folder = _checkpoints(tmp_path / "mine")
    (folder / "gen_epoch2.pt").unlink()
    overrides = _overrides(tmp_path, folder, "{}")
    result = CliRunner().invoke(main, ["run", str(DIGITS), "--quiet"] + [a for o in overrides for a in ("--set", o)])
    assert result.exit_code == 2 and "no checkpoint for epoch(s) [2]" in result.stderr
    assert not (tmp_path / "run" / "filter.pt").exists()


def test_check_runs_on_the_training_device(tmp_path, monkeypatch):
    """The generator is checked where it will run: on the device handed to prepare."""
    import gafi_opt.runner as runner

    seen = {}
    monkeypatch.setattr(runner, "check_generator", lambda module, shape, classes, device: seen.update(device=device, module_device=next(module.parameters()).device))
    folder = _checkpoints(tmp_path / "good")
    spec = load_spec(DIGITS, _overrides(tmp_path, folder, "{}"))
    runner.check_checkpoints(spec, load_data(spec.data), torch.device("cpu"))
    assert seen == {"device": torch.device("cpu"), "module_device": torch.device("cpu")}
    with pytest.raises(GafiError, match="does not fit the spec's generator"):
        bad = load_spec(DIGITS, _overrides(tmp_path, folder, "{}") + ["generator.latent_dim=4"])
        runner.check_checkpoints(bad, load_data(bad.data), "cpu")


def test_a_generator_that_ignores_its_labels_is_named_in_run_status_and_export(tmp_path):
    """Untrained weights draw noise whatever the label: the filter accepts few samples, so the 'filtered'
    sets are mostly unfiltered fallback; every command that shows results says so in one line per stage."""
    folder = _checkpoints(tmp_path / "noise")
    storage = f"sqlite:///{tmp_path / 'gafi.db'}"
    overrides = [*_overrides(tmp_path, folder, "{}"), "synth.max_attempts=2", "stddev.values=[1.0]", "threshold.values=[0.5]"]
    result = CliRunner().invoke(main, ["run", str(DIGITS), "--quiet", "--storage", storage] + [a for o in overrides for a in ("--set", o)])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("gafi-opt: warning: pipeline byo, stage ")]
    assert {line.split("stage ")[1].split(":")[0] for line in warned} == {"checkpoint", "stddev", "threshold", "final"}
    assert all("unfiltered fallback" in line for line in warned)
    status = CliRunner().invoke(main, ["status", "--storage", storage])
    assert status.exit_code == 0 and status.output.count("warning: pipeline byo, stage ") == 4
    export = CliRunner().invoke(main, ["export", "--storage", storage, "--format", "json"])
    assert export.exit_code == 0 and export.stdout.startswith("[") and export.stderr.count("warning: ") == 4
