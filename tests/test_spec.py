"""Study files: parsing, grids, overrides and validation errors."""

from pathlib import Path

import pytest

from gafi_opt.errors import GafiError
from gafi_opt.spec import Spec, load_spec

STUDIES = Path(__file__).resolve().parent.parent / "studies"


def write(tmp_path, text, name="study.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_digits_preset_loads():
    spec = load_spec(STUDIES / "digits.toml")
    assert spec.name == "digits" and spec.data.source == "digits"
    assert spec.checkpoint.values == tuple(float(v) for v in range(10, 101, 10))
    assert spec.stddev.values[0] == 1.0 and spec.stddev.values[-1] == 3.4 and len(spec.stddev.values) == 9
    assert spec.threshold.values == tuple(round(0.1 * i, 10) for i in range(10))
    assert spec.final.recycle_every == 1 and spec.checkpoint.recycle_every == 10


def test_name_defaults_to_file_stem(tmp_path):
    spec = load_spec(write(tmp_path, "[checkpoint]\nvalues = [1]\n[stddev]\nvalues=[1.0]\n[threshold]\nvalues=[0.0]\n[generator]\nepochs=1\n", "mine.toml"))
    assert spec.name == "mine"
    assert spec.run_path == Path("runs/mine")
    assert spec.storage_url == "sqlite:///runs/mine/gafi.db"


def test_overrides_reach_any_key():
    spec = load_spec(STUDIES / "digits.toml", ["cas.epochs=3", "threshold.values=[0.0, 0.5]", "data.download=true", "name=other"])
    assert spec.cas.epochs == 3
    assert spec.threshold.values == (0.0, 0.5)
    assert spec.data.download is True
    assert spec.name == "other"


def test_spec_round_trips_through_json():
    spec = load_spec(STUDIES / "digits.toml", ["generator.options={depth = 2}"])
    assert Spec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.source=imagenet", "unknown dataset source 'imagenet'"),
        ("data.bogus=1", "unknown key 'data.bogus'"),
        ("bogus=1", "unknown key 'bogus'"),
        ("cas.epochs='ten'", "cas.epochs must be an integer"),
        ("threshold.values=[0.5, 1.0]", "threshold.values must lie in [0, 1)"),
        ("threshold.values=[-0.1]", "threshold.values must lie in [0, 1)"),
        ("stddev.values=[0.0, 1.0]", "stddev.values must be numbers > 0"),
        ("stddev.values=[-1.0]", "stddev.values must be numbers > 0"),
        ("checkpoint.values=[500]", "go past generator.epochs"),
        ("checkpoint.values=[1.5]", "whole epochs"),
        ("checkpoint.pruner=magic", "pruner must be one of"),
        ("cas.augment=['rotate']", "unknown augmentation 'rotate'"),
        ("data.real_fraction=0", "real_fraction"),
        ("selection=train", "selection must be"),
        ("stddev.values={start=2.0, stop=1.0, step=0.1}", "stop >= start"),
        ("data.source=npz", "data.root must name"),
    ],
)
def test_bad_values_name_the_problem(override, message):
    with pytest.raises(GafiError) as info:
        load_spec(STUDIES / "digits.toml", [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(GafiError, match="study file not found"):
        load_spec(tmp_path / "absent.toml")
    with pytest.raises(GafiError, match="not valid TOML"):
        load_spec(write(tmp_path, "name = [unclosed"))
    with pytest.raises(GafiError, match="must be a table"):
        load_spec(write(tmp_path, "data = 3"))
    with pytest.raises(GafiError, match="--set expects key=value"):
        load_spec(STUDIES / "digits.toml", ["cas.epochs"])
