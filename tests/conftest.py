"""Shared fixtures: a tiny digits pipeline, trained once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "studies" / "digits.toml"

# A whole pipeline in well under a minute on a 2-core CPU: tiny models, few epochs, two points per grid.
TINY = [
    "generator.epochs=3",
    "generator.width=32",
    "filter.epochs=2",
    "filter.width=8",
    "cas.epochs=2",
    "cas.width=8",
    "checkpoint.values=[2, 3]",
    "stddev.values=[1.0, 1.5]",
    "threshold.values=[0.0, 0.5]",
    "final.seeds=2",
    "synth.samples_per_class=40",
]


def tiny_overrides(run_dir: Path, name: str = "tiny") -> list[str]:
    return [*TINY, f"name={name}", f"run_dir={run_dir}"]


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Tests run beside each other on small machines; one thread avoids oversubscription.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """A finished tiny digits pipeline: (spec, storage URL) after `gafi-opt run`."""
    from click.testing import CliRunner

    from gafi_opt.cli import main
    from gafi_opt.spec import load_spec

    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    overrides = tiny_overrides(run_dir)
    args = ["run", str(DIGITS), "--quiet"] + [arg for o in overrides for arg in ("--set", o)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    spec = load_spec(DIGITS, overrides)
    return spec, spec.storage_url
