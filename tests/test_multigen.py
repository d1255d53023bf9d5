"""Multi-generator sampling on two tiny digits pipelines that share one storage."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import numpy
import optuna
import pytest
import torch
from click.testing import CliRunner
from conftest import DIGITS, ROOT, TINY
from optuna.trial import TrialState

from gafi_opt.cli import main
from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline
from gafi_opt.pipeline.multigen import load_members
from gafi_opt.result.multigen import MultiGenRun, shares
from gafi_opt.spec import load_spec

# One point per grid (different per pipeline, so each member's own values are visible), one final seed.
PIPELINES = {
    "mgA": ["seed=0", "checkpoint.values=[3]", "stddev.values=[1.0]", "threshold.values=[0.0]"],
    "mgB": ["seed=1", "checkpoint.values=[2]", "stddev.values=[1.5]", "threshold.values=[0.3]"],
}
EXPECTED_MEMBERS = [
    {"pipeline": "mgA", "checkpoint": 3, "stddev": 1.0, "threshold": 0.0},
    {"pipeline": "mgB", "checkpoint": 2, "stddev": 1.5, "threshold": 0.3},
]


def _overrides(root, name):
    return [*TINY, "final.seeds=1", f"name={name}", f"run_dir={root / name}", *PIPELINES[name]]


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    root = tmp_path_factory.mktemp("multigen")
    url = f"sqlite:///{root / 'gafi.db'}"
    for name in PIPELINES:
        result = _invoke("run", DIGITS, "--quiet", "--storage", url, *[a for o in _overrides(root, name) for a in ("--set", o)])
        assert result.exit_code == 0, result.output
    return root, url


def _study(url, name):
    return optuna.load_study(study_name=name, storage=url)


def test_multigen_trains_one_classifier_per_seed_and_resumes(storage):
    _, url = storage
    result = _invoke("multigen", "--storage", url, "--pipelines", "mgB, mgA", "--seeds", 2, "--quiet")
    assert result.exit_code == 0, result.output
    assert "multigen/mgA+mgB (K=2)" in result.output
    study = _study(url, "multigen/mgA+mgB")  # members in name order, whatever order they were given in
    assert study.user_attrs["gafi_multigen"] == EXPECTED_MEMBERS and study.user_attrs["generators"] == 2
    trials = study.get_trials(states=[TrialState.COMPLETE])
    assert sorted(t.params["seed"] for t in trials) == [0, 1]
    cas_epochs = load_spec(DIGITS, TINY).cas.epochs
    for trial in trials:
        attrs = trial.user_attrs
        assert attrs["classifier_epochs"] == cas_epochs and sorted(trial.intermediate_values) == list(range(1, cas_epochs + 1))
        assert 0.0 <= attrs["test_acc"] <= 1.0 and trial.value == attrs["val_acc"]
        assert "mgA: checkpoint 3, stddev 1" in attrs["config"] and "mgB: checkpoint 2, stddev 1.5, threshold 0.3" in attrs["config"]

    # Again: nothing to do. With one more seed: exactly one more classifier.
    assert _invoke("multigen", "--storage", url, "--pipelines", "mgA,mgB", "--seeds", 2, "--quiet").exit_code == 0
    assert len(_study(url, "multigen/mgA+mgB").trials) == 2
    assert _invoke("multigen", "--storage", url, "--pipelines", "mgA,mgB", "--seeds", 3, "--quiet").exit_code == 0
    trials = _study(url, "multigen/mgA+mgB").get_trials(states=[TrialState.COMPLETE])
    assert sorted(t.params["seed"] for t in trials) == [0, 1, 2]


def test_each_generator_brings_its_own_settings_and_an_equal_share(storage):
    _, url = storage
    pipelines, members = load_members(url, ["mgA", "mgB"])
    run = MultiGenRun(pipelines, members, torch.device("cpu"))
    per_class = pipelines[0].spec.synth.samples_per_class  # 40: 20 from each generator
    assert run.shares == [20, 20]
    source = run.source(seed=0)
    a, b = source.sources
    assert (a.stddev_range, a.threshold, b.stddev_range, b.threshold) == ((1.0, 1.0), 0.0, (1.5, 1.5), 0.3)
    assert a.filter_model is not b.filter_model and a.generator is not b.generator
    source.fill()
    assert source.images.shape == (10 * per_class, 1, 8, 8) and source.images.dtype == torch.uint8
    assert torch.bincount(source.labels).tolist() == [per_class] * 10
    assert torch.equal(source.images[: len(a)], a.images) and torch.equal(source.images[len(a) :], b.images)
    # Statistics add up over the generators.
    assert int(source.stats.generated.sum()) == int(a.stats.generated.sum() + b.stats.generated.sum())
    before = source.images.clone()
    source.recycle(1.0)  # renewed every epoch: a fresh draw from both generators
    assert not torch.equal(before[: len(a)], source.images[: len(a)]) and not torch.equal(before[len(a) :], source.images[len(a) :])


def test_shares_split_every_class_evenly():
    assert shares(40, 1) == [40]
    assert shares(4000, 6) == [667, 667, 667, 667, 666, 666] and sum(shares(4000, 6)) == 4000
    with pytest.raises(GafiError, match="6 generators need at least 6"):
        shares(5, 6)


def test_export_adds_a_row_per_generator_count(storage):
    _, url = storage
    assert _invoke("multigen", "--storage", url, "--pipelines", "mgA", "--seeds", 1, "--quiet").exit_code == 0
    assert _invoke("multigen", "--storage", url, "--pipelines", "mgA,mgB", "--seeds", 2, "--quiet").exit_code == 0
    result = _invoke("export", "--storage", url, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["pipeline"] for r in rows][:2] == ["mgA", "mgB"]
    multi = [r for r in rows if r.get("generators")]
    assert [(r["pipeline"], r["generators"]) for r in multi] == [("multigen/mgA", 1), ("multigen/mgA+mgB", 2)]
    row = multi[1]
    trials = _study(url, "multigen/mgA+mgB").get_trials(states=[TrialState.COMPLETE])
    assert row["cas_test"] == pytest.approx(sum(t.user_attrs["test_acc"] for t in trials) / len(trials))
    assert row["seeds"] == len(trials) and row["members"] == EXPECTED_MEMBERS
    reals = [Pipeline.load(url, n).attrs()["real_test"] for n in ("mgA", "mgB")]
    assert row["real_test"] == pytest.approx(sum(reals) / 2) and row["selection"] == "val"
    assert row["checkpoint"] is None and row["dataset"] == "digits"
    table = _invoke("export", "--storage", url)
    assert "multigen/mgA (K=1)" in table.output and "multigen/mgA+mgB (K=2)" in table.output
    # Naming only mgB leaves out the studies that also use mgA.
    only_b = json.loads(_invoke("export", "--storage", url, "--pipeline", "mgB", "--format", "json").stdout)
    assert [r["pipeline"] for r in only_b] == ["mgB"]


def test_bad_pipeline_sets_are_one_line_errors(storage, tmp_path):
    root, url = storage
    copy = tmp_path / "copy.db"  # the extra pipelines go into a copy, so the shared storage stays as it is
    with sqlite3.connect(root / "gafi.db") as source, sqlite3.connect(copy) as target:
        source.backup(target)  # the storage runs in WAL mode: a file copy could miss recent writes
    copy_url = f"sqlite:///{copy}"
    Pipeline.create_or_load(load_spec(DIGITS, [*_overrides(root, "mgA"), "name=mgC", "data.val_fraction=0.3"]), copy_url)
    Pipeline.create_or_load(load_spec(DIGITS, [*_overrides(root, "mgA"), "name=mgD"]), copy_url)
    cases = [
        ("mgA,mgC", "pipelines 'mgA' and 'mgC' differ in data.val_fraction (0.15 vs 0.3)"),
        ("mgA,mgD", "pipeline 'mgD' has not finished its threshold stage"),
        ("mgA,zz", "no pipeline 'zz'"),
        ("mgA,mgA", "pipeline 'mgA' is listed more than once"),
        (",", "--pipelines needs at least one pipeline name"),
    ]
    for pipelines, message in cases:
        result = _invoke("multigen", "--storage", copy_url, "--pipelines", pipelines, "--quiet")
        assert result.exit_code == 2, (pipelines, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not [s for s in optuna.get_all_study_summaries(copy_url) if s.study_name.startswith("multigen/mgA+mgC")]


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_a_multigen_process_stopped_mid_trial_is_followed_by_one_that_reruns_the_lost_seed(storage, tmp_path, signum):
    root, _ = storage
    copy = tmp_path / "killed.db"  # its own copy of the two finished pipelines
    with sqlite3.connect(root / "gafi.db") as source, sqlite3.connect(copy) as target:
        source.backup(target)
    url = f"sqlite:///{copy}"
    if any(s.study_name == "multigen/mgA+mgB" for s in optuna.get_all_study_summaries(url, include_best_trial=False)):
        optuna.delete_study(study_name="multigen/mgA+mgB", storage=url)  # left by the tests before: start afresh
    command = [sys.executable, "-m", "gafi_opt.cli", "multigen", "--storage", url, "--pipelines", "mgA,mgB", "--seeds", "2",
               "--heartbeat-interval", "1", "--grace-period", "2", "--quiet"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no multigen trial ever ran"
        summaries = [s for s in optuna.get_all_study_summaries(url, include_best_trial=False) if s.study_name == "multigen/mgA+mgB"]
        running = _study(url, "multigen/mgA+mgB").get_trials(states=[TrialState.RUNNING]) if summaries else []
        if running:
            break
        time.sleep(0.05)
    process.send_signal(signum)
    stopped = process.wait(timeout=60)
    assert stopped == (-signal.SIGKILL if signum == signal.SIGKILL else 130), process.stderr.read()
    victim = running[0]

    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    trials = _study(url, "multigen/mgA+mgB").get_trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    complete = sorted(t.params["seed"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == [0, 1]  # every seed once: the lost one re-run, none twice
    killed = next(t for t in trials if t._trial_id == victim._trial_id)
    # SIGKILL: the next process's heartbeat sweep fails it; Ctrl-C: the stopped process failed and re-queued it itself.
    reason = "lost worker: " if signum == signal.SIGKILL else "interrupted by SIGINT"
    assert killed.state == TrialState.FAIL and killed.system_attrs["gafi:fail_reason"].startswith(reason)
    rows = json.loads(_invoke("export", "--storage", url, "--format", "json").stdout)
    assert next(r for r in rows if r["pipeline"] == "multigen/mgA+mgB")["seeds"] == 2


def test_sample_writes_the_mix_the_multigen_classifiers_train_on(storage, tmp_path):
    _, url = storage
    assert _invoke("multigen", "--storage", url, "--pipelines", "mgA,mgB", "--seeds", 1, "--quiet").exit_code == 0
    out = tmp_path / "mix.npz"
    result = _invoke("sample", "--storage", url, "--pipeline", "multigen/mgA+mgB", "-o", out, "--per-class", 6, "--quiet")
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "mix.npz.json").read_text())
    assert sidecar["members"] == EXPECTED_MEMBERS and sidecar["recipe"] == "multigen" and sidecar["images"] == 60 and sidecar["seed"] == 0
    # The same draw as MultiGenRun makes for seed 0: 3 images of every class from each generator, each with its own knobs.
    source = MultiGenRun(*load_members(url, ["mgA", "mgB"]), torch.device("cpu")).source(seed=0, per_class=6)
    source.fill()
    with numpy.load(out) as archive:
        assert numpy.array_equal(archive["train_images"], source.images[:, 0].numpy())
        assert numpy.array_equal(archive["train_labels"][:, 0], source.labels.numpy())
    staged = _invoke("sample", "--storage", url, "--pipeline", "multigen/mgA+mgB", "-o", tmp_path / "x.npz", "--stage", "final", "--trial", 0)
    assert staged.exit_code == 2 and "is a multigen study" in staged.stderr
