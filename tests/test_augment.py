"""Real + synthetic training (augment mode), the real fraction, the real-only baseline and `gafi-opt scarce`."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import DIGITS, TINY

from gafi_opt.cas import TrialContext, _training_set, train_cas
from gafi_opt.cli import main
from gafi_opt.data import load_data
from gafi_opt.data.fingerprint import bind_run_data, train_set_record
from gafi_opt.errors import GafiError
from gafi_opt.experiments.scarce import ScarcePlan, parse_fractions, step_factors, train_sizes
from gafi_opt.pipeline.store import REAL_ONLY_PREFIX, Pipeline
from gafi_opt.report import EXPORT_KEYS, format_rows, summary_row
from gafi_opt.search.pruners import pruner_warmup
from gafi_opt.search.stages import TrialConfig
from gafi_opt.spec import load_spec
from gafi_opt.train.classifier import ClassifierTrainer
from gafi_opt.train.real_only import train_real_only

FRACTION = 0.2
# The shared tiny overrides, less the fixed set size (augment mode sizes its set by the ratio).
TINY_AUGMENT = [o for o in TINY if not o.startswith("synth.samples_per_class")]


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def digest(x: torch.Tensor, y: torch.Tensor) -> tuple:
    return (x.shape[0], hash(x.cpu().numpy().tobytes()), hash(y.cpu().numpy().tobytes()))


@pytest.fixture(scope="module")
def scarce_run(tmp_path_factory):
    """`gafi-opt scarce` at one fraction on tiny models, recording the real data every model trained on."""
    import gafi_opt.cas
    import gafi_opt.runner

    seen = {"filter": [], "generator": [], "real_only": [], "trial": []}

    def spy(kind, original, data_of):
        def wrapper(*args, **kwargs):
            seen[kind].append(data_of(*args, **kwargs))
            return original(*args, **kwargs)

        return wrapper

    def data_arg(spec, data, *rest, **kwargs):
        return spec.name, digest(data.train_x, data.train_y)

    def trial_arg(ctx, config, *rest, **kwargs):
        return ctx.spec.name, digest(*ctx.train), config.stage

    run_dir = tmp_path_factory.mktemp("scarce") / "run"
    # One point per searched grid: the stages' own search is tested elsewhere; here the data matters.
    overrides = TINY_AUGMENT + ["checkpoint.values=[3]", "stddev.values=[1.0]", "threshold.values=[0.0]", "name=tiny", f"run_dir={run_dir}"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gafi_opt.runner, "train_real_classifier", spy("filter", gafi_opt.runner.train_real_classifier, data_arg))
        mp.setattr(gafi_opt.runner, "train_generator", spy("generator", gafi_opt.runner.train_generator, data_arg))
        mp.setattr(gafi_opt.runner, "train_real_only", spy("real_only", gafi_opt.runner.train_real_only, data_arg))
        mp.setattr(gafi_opt.cas, "train_cas", spy("trial", gafi_opt.cas.train_cas, trial_arg))
        args = ["scarce", str(DIGITS), "--fractions", str(FRACTION), "--seeds", "2", "--budget", "epochs", "--quiet", "--format", "json"]
        result = CliRunner().invoke(main, args + sets(overrides), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    base = load_spec(DIGITS, overrides)
    plan = ScarcePlan.for_spec(base)
    pipelines = {mode: Pipeline.load(plan.storage, plan.spec(FRACTION, mode, 2).name) for mode in ("synthetic-only", "augment")}
    return json.loads(result.stdout), pipelines, seen


def test_scarce_models_all_train_on_the_same_real_subset(scarce_run):
    rows, pipelines, seen = scarce_run
    spec = pipelines["augment"].spec
    data = load_data(spec.data)
    subset = digest(data.train_x, data.train_y)
    full = load_data(load_spec(DIGITS, TINY_AUGMENT).data)
    # Stratified: every class keeps its share, rounded.
    per_class = torch.bincount(full.train_y).tolist()
    assert torch.bincount(data.train_y).tolist() == [round(FRACTION * n) for n in per_class]
    # The filter and the generator train once for the fraction (the two modes share the run directory) ...
    assert len(seen["filter"]) == len(seen["generator"]) == 2  # called per pipeline; the second finds them trained
    # ... and the filter, the generator, the real-only baseline and every trial of both modes see the same subset.
    for kind in ("filter", "generator", "real_only"):
        assert {d for _, d in seen[kind]} == {subset}, kind
    assert {d for _, d, _ in seen["trial"]} == {subset}
    assert {name for name, _, _ in seen["trial"]} == {p.name for p in pipelines.values()}
    assert rows[0]["real_train_images"] == data.train_y.numel()
    stored = json.loads((spec.run_path / "data.json").read_text())
    assert stored == train_set_record(spec, data)


def test_run_directory_refuses_models_of_another_real_subset(scarce_run):
    _, pipelines, _ = scarce_run
    spec = pipelines["augment"].spec
    other = spec.with_overrides(["data.real_fraction=0.3"])
    with pytest.raises(GafiError, match="another real train set"):
        bind_run_data(other, load_data(other.data))


@pytest.mark.parametrize("ratio", [0.5, 2.0])
def test_augment_training_set_is_the_real_subset_plus_synthetic_at_the_ratio(scarce_run, ratio, monkeypatch):
    _, pipelines, _ = scarce_run
    spec = pipelines["augment"].spec.with_overrides([f"augment_ratio={ratio}", "cas.epochs=1"])
    data = load_data(spec.data)
    ctx = TrialContext(spec, data, torch.device("cpu"))
    source = ctx.source(TrialConfig("checkpoint", 3, 1.0, None, 0, seed=0))
    source.fill()
    images, labels = _training_set(ctx, source)
    n_real, classes = data.train_y.numel(), data.num_classes
    # The real subset, unchanged, then the synthetic set.
    assert torch.equal(images[:n_real], data.train_x) and torch.equal(labels[:n_real], data.train_y)
    assert torch.equal(images[n_real:], source.images) and torch.equal(labels[n_real:], source.labels)
    synthetic = labels.numel() - n_real
    assert synthetic == ctx.per_class * classes
    assert abs(synthetic - ratio * n_real) <= classes / 2  # class-balanced: per class = round(ratio * real / classes)
    assert torch.bincount(labels[n_real:], minlength=classes).tolist() == [ctx.per_class] * classes
    # train_cas trains on exactly that set every epoch.
    sizes = []
    train_epoch = ClassifierTrainer.train_epoch
    monkeypatch.setattr(ClassifierTrainer, "train_epoch", lambda self, x, y: sizes.append(x.shape[0]) or train_epoch(self, x, y))
    train_cas(ctx, TrialConfig("checkpoint", 3, 1.0, None, 0, seed=0))
    assert sizes == [n_real + synthetic]


def test_synthetic_only_training_set_has_no_real_images(scarce_run):
    _, pipelines, _ = scarce_run
    spec = pipelines["synthetic-only"].spec
    data = load_data(spec.data)
    ctx = TrialContext(spec, data, torch.device("cpu"))
    source = ctx.source(TrialConfig("checkpoint", 3, 1.0, None, 0, seed=0))
    source.fill()
    images, labels = _training_set(ctx, source)
    assert torch.equal(images, source.images) and torch.equal(labels, source.labels)
    assert labels.numel() == (data.train_y.numel() // data.num_classes) * data.num_classes


def test_export_has_mode_fraction_ratio_and_real_only_baseline(scarce_run):
    rows, pipelines, _ = scarce_run
    augment, synthetic = (summary_row(pipelines[m]) for m in ("augment", "synthetic-only"))
    assert {"mode", "real_fraction", "augment_ratio", "real_only_test", "real_only_test_std"} <= set(EXPORT_KEYS)
    assert (augment["mode"], augment["real_fraction"], augment["augment_ratio"]) == ("augment", FRACTION, 1.0)
    assert (synthetic["mode"], synthetic["real_fraction"], synthetic["augment_ratio"]) == ("synthetic-only", FRACTION, None)
    assert augment["gap_closed"] is None and augment["remaining_gap"] is None  # gaps are a synthetic-only measure
    # The real-only baseline: the CAS recipe, the final stage's seeds, the same epochs, reproducible.
    spec = pipelines["augment"].spec
    attrs = pipelines["augment"].attrs()
    stored = [attrs[f"{REAL_ONLY_PREFIX}{seed}"] for seed in (spec.seed, spec.seed + 1)]
    assert all(r["classifier_epochs"] == spec.cas.epochs for r in stored)
    again = train_real_only(spec, load_data(spec.data), torch.device("cpu"), seed=spec.seed + 1)
    assert again["test_acc"] == stored[1]["test_acc"]
    tests = [r["test_acc"] for r in stored]
    assert augment["real_only_test"] == pytest.approx(sum(tests) / 2)
    assert augment["real_only_test_std"] == pytest.approx(abs(tests[0] - tests[1]) / 2**0.5)
    # Same data, recipe and seeds in both modes: the same baseline.
    assert synthetic["real_only_test"] == augment["real_only_test"]
    table = format_rows([augment, synthetic], "markdown")
    header = table.splitlines()[0]
    assert "| mode | real fraction | ratio |" in header and "| real-only |" in header
    assert f"| augment | {FRACTION:g} | 1 |" in table and f"| synthetic-only | {FRACTION:g} | - |" in table
    csv_header = format_rows([augment], "csv").splitlines()[0].split(",")
    assert {"mode", "real_fraction", "augment_ratio", "real_only_test", "real_only_test_std"} <= set(csv_header)
    # The scarce table row takes its numbers from those pipelines.
    row = rows[0]
    assert row["real_only_test"] == augment["real_only_test"]
    assert row["augment_test"] == augment["cas_test"] and row["synthetic_only_test"] == synthetic["cas_test"]
    assert row["augment_gain"] == pytest.approx(augment["cas_test"] - augment["real_only_test"])


def test_steps_budget_scales_epochs_by_batches_per_epoch():
    base = load_spec(DIGITS)
    n_full, sizes = train_sizes(base, [0.1, 1.0])
    assert n_full == 1221 and sizes == {0.1: 120, 1.0: 1221}
    factors = step_factors(base, n_full, sizes[0.1])
    # generator batches of 64, last partial one dropped: 19 per epoch vs 1; classifiers (128, kept): 10 vs 1.
    assert factors == {"generator": 19.0, "filter": 10.0, "cas": 10.0}
    plan = ScarcePlan.for_spec(base)
    scarce = plan.spec(0.1, "augment", 3, factors)
    assert scarce.generator.epochs == 1900 and scarce.checkpoint.values == tuple(float(19 * v) for v in base.checkpoint.values)
    assert (scarce.filter.epochs, scarce.cas.epochs) == (300, 150)
    # The default warm-up follows the lr milestones (epoch 10 of 15, so 91 of 150); an explicit one is scaled.
    assert (pruner_warmup(base, "stddev"), pruner_warmup(scarce, "stddev")) == (10, 91)
    explicit = ScarcePlan.for_spec(load_spec(DIGITS, ["stddev.pruner_warmup=5"]))
    assert explicit.spec(0.1, "augment", 3, factors).stddev.pruner_warmup == 50
    assert (scarce.objective, scarce.data.real_fraction, scarce.final.seeds) == ("augment", 0.1, 3)
    other = plan.spec(0.1, "synthetic-only", 3, factors)
    assert other.run_path == scarce.run_path and other.storage == scarce.storage and other.name != scarce.name
    full = plan.spec(1.0, "augment", 3, step_factors(base, n_full, sizes[1.0]))
    assert (full.generator.epochs, full.cas.epochs) == (base.generator.epochs, base.cas.epochs)
    assert full.run_path != scarce.run_path
    assert plan.spec(0.1, "augment", 3, None).cas.epochs == base.cas.epochs  # budget "epochs"


def test_augment_mode_refuses_a_fixed_synthetic_set_size():
    with pytest.raises(GafiError, match="samples_per_class"):
        load_spec(DIGITS, ["objective=augment", "synth.samples_per_class=10"])


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--fractions", "0,1.0"], "0 is not a real fraction in (0, 1]"),
        (["--fractions", "1.5"], "1.5 is not a real fraction"),
        (["--fractions", "0.1,ten"], "'ten' is not a number"),
        (["--fractions", "0.1,0.1"], "listed twice"),
        (["--fractions", ""], "is not a number"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--set", "generator.checkpoints=somewhere/*.pt"], "generator.checkpoints must be empty"),
    ],
)
def test_scarce_cli_rejects_bad_input_in_one_line(args, fragment, tmp_path):
    result = CliRunner().invoke(main, ["scarce", str(DIGITS), "--set", f"run_dir={tmp_path / 'run'}", *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gafi-opt: error: ") and fragment in lines[0], result.output
    assert not (tmp_path / "run-scarce").exists()  # nothing trained


def test_parse_fractions_keeps_order():
    assert parse_fractions(" 0.1, 1.0 ,0.5") == [0.1, 1.0, 0.5]
