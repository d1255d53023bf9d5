"""The fast paths: batched synthesis against the official-style reference, inference copies, the trainer's
options, the budgeted stage samplers and pruners, and the spec keys that switch them."""

import math

import optuna
import pytest
import torch
from conftest import DIGITS
from torch import nn

from gafi_opt.data.augment import random_crop
from gafi_opt.errors import GafiError
from gafi_opt.models import accel
from gafi_opt.models.accel import ModelSlot, autocast_dtype, inference_copy, parameter_dtype, run_inference
from gafi_opt.search.pruners import make_pruner, pruner_min_epochs
from gafi_opt.search.reuse import same_recipe
from gafi_opt.search.samplers import UniquePointSampler, make_sampler
from gafi_opt.search.stages import TrialConfig, suggest, trial_budget
from gafi_opt.search.stages import slot_params as stage_slot_params
from gafi_opt.spec import ClassifierSpec, load_spec
from gafi_opt.synth import SyntheticSource
from gafi_opt.testing.reference_synthesis import reference_synthesis
from gafi_opt.train.classifier import ClassifierTrainer


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny tensors: one thread avoids OpenMP hand-offs on a busy machine; restored afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ShiftEcho(nn.Module):
    """A 3-class 'generator': a 2x2 image whose mean is z-noise plus a class offset."""

    latent_dim = 4
    num_classes = 3

    def forward(self, z, y):
        return torch.tanh(z / 3 + (y.float()[:, None] - 1) * 0.5).view(-1, 1, 2, 2)


class MeanFilter(nn.Module):
    """Logits from the mean pixel: low means class 0, middle class 1, high class 2."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-6 * m, torch.zeros_like(m) + 2.0, 6 * m], dim=1)


def pooled_z(acc_a, gen_a, acc_b, gen_b):
    p = (acc_a + acc_b) / (gen_a + gen_b)
    se = math.sqrt(p * (1 - p) * (1 / gen_a + 1 / gen_b))
    return 0.0 if se == 0 else (acc_a / gen_a - acc_b / gen_b) / se


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.6])
def test_batched_and_reference_synthesis_accept_at_the_same_rates(threshold):
    fast = SyntheticSource(ShiftEcho(), 3, 3000, threshold=threshold, filter_model=MeanFilter(), seed=1, batch_size=2048)
    fast.fill()
    images, labels, ref = reference_synthesis(ShiftEcho(), MeanFilter(), 3, 3000, threshold=threshold, seed=2)
    assert images.shape == fast.images.shape and torch.equal(labels, fast.labels)
    assert int(fast.stats.fallback.sum()) == 0 and int(ref.fallback.sum()) == 0
    for c in range(3):
        a_acc, a_gen = int(fast.stats.accepted[c]), int(fast.stats.generated[c])
        b_acc, b_gen = int(ref.accepted[c]), int(ref.generated[c])
        assert abs(pooled_z(a_acc, a_gen, b_acc, b_gen)) < 4.5, (c, a_acc / a_gen, b_acc / b_gen)
    # The rates differ between classes, so pooling per class (not per slot) is what is tested.
    rates = fast.stats.per_class_acceptance()
    assert max(rates) - min(rates) > 0.1
    # Every stored image passes the filter, in both.
    for imgs, labs in ((fast.images, fast.labels), (images, labels)):
        probs = MeanFilter()(imgs.float() / 127.5 - 1).softmax(1)
        assert ((probs.argmax(1) == labs) & (probs.gather(1, labs[:, None]).squeeze(1) > threshold)).all()


def test_batched_synthesis_wastes_few_candidates():
    # Accepted candidates fill any empty slot of their class: about per_class / rate draws, not more.
    source = SyntheticSource(ShiftEcho(), 3, 2000, threshold=0.5, filter_model=MeanFilter(), seed=0)
    source.fill()
    needed = sum(2000 / r for r in source.stats.per_class_acceptance())
    assert int(source.stats.generated.sum()) < 1.08 * needed
    assert int(source.stats.fallback.sum()) == 0


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.latent_dim = 6
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


class Branchy(ConvBN):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return super().forward(x)
        return super().forward(-x)


def trained_bn(model):
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 8, 8) * 2 + 0.5)  # non-trivial running statistics
    return model.eval()


def test_inference_copy_folds_batchnorm_and_keeps_the_original():
    model = trained_bn(ConvBN())
    x = torch.randn(10, 1, 8, 8)
    copy = inference_copy(model, "cpu", (x[:4],))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())  # folded into the conv
    assert copy.latent_dim == 6  # plain attributes survive tracing
    with torch.inference_mode():
        assert torch.allclose(copy(x.contiguous(memory_format=torch.channels_last)), model(x), atol=1e-5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the caller's model is untouched
    assert model.body[0].weight.is_contiguous()
    assert inference_copy(copy, "cpu", (x[:4],)) is copy  # prepared once


def test_inference_copy_falls_back_for_untraceable_models_and_bakes_spectral_norm():
    model = trained_bn(Branchy())
    x = torch.randn(6, 1, 8, 8)
    copy = inference_copy(model, "cpu", (x,))
    with torch.inference_mode():
        assert torch.allclose(copy(x), model(x), atol=1e-5)
    sn = nn.Sequential(nn.utils.parametrizations.spectral_norm(nn.Linear(5, 3))).eval()
    baked = inference_copy(sn, "cpu", (torch.randn(4, 5),))
    assert not nn.utils.parametrize.is_parametrized(baked.get_submodule("0"))
    assert nn.utils.parametrize.is_parametrized(sn[0])  # the original keeps its spectral norm
    z = torch.randn(4, 5)
    with torch.inference_mode():
        assert torch.allclose(baked(z), sn(z), atol=1e-5)


def test_a_bf16_inference_copy_is_cast_once_and_answers_in_fp32():
    model = trained_bn(ConvBN())
    x = torch.randn(32, 1, 8, 8)
    copy = inference_copy(model, "cpu", (x[:4],), torch.bfloat16)
    assert parameter_dtype(copy) is torch.bfloat16 and parameter_dtype(model) is torch.float32
    with torch.inference_mode():
        out, expected = run_inference(copy, torch.bfloat16, x), model(x)
    assert out.dtype is torch.float32  # fp32 in, fp32 out: callers never see bf16
    assert torch.allclose(out, expected, rtol=0.05, atol=0.05) and not torch.equal(out, expected)


def test_a_model_that_cannot_run_in_bf16_stays_fp32():
    class Fp32Only(nn.Module):
        def forward(self, x):
            if x.dtype is not torch.float32:
                raise TypeError("fp32 only")
            return x * 2

    copy = inference_copy(Fp32Only(), "cpu", (torch.randn(2, 3),), torch.bfloat16)
    assert parameter_dtype(copy) is torch.float32
    with torch.inference_mode():
        assert torch.equal(run_inference(copy, None, torch.ones(2, 3)), torch.full((2, 3), 2.0))


@pytest.mark.skipif(not accel.cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_bf16_synthesis_keeps_the_filter_rule_and_the_acceptance_rates():
    fp32 = SyntheticSource(ShiftEcho(), 3, 2000, threshold=0.5, filter_model=MeanFilter(), seed=0, precision="fp32")
    bf16 = SyntheticSource(ShiftEcho(), 3, 2000, threshold=0.5, filter_model=MeanFilter(), seed=0, precision="bf16")
    for source in (fp32, bf16):
        source.fill()
    for c in range(3):
        z = pooled_z(int(bf16.stats.accepted[c]), int(bf16.stats.generated[c]), int(fp32.stats.accepted[c]), int(fp32.stats.generated[c]))
        assert abs(z) < 4.5, c
    probs = MeanFilter()(bf16.images.float() / 127.5 - 1).softmax(1)  # stored images pass the fp32 filter's rule
    kept = (probs.argmax(1) == bf16.labels) & (probs.gather(1, bf16.labels[:, None]).squeeze(1) > 0.5)
    assert kept.float().mean() > 0.99  # bf16 rounding may move a sample across the threshold, rarely


def test_precision_choices(monkeypatch):
    assert autocast_dtype(torch.device("cpu"), "auto") is None  # CPU default: fp32
    assert autocast_dtype(torch.device("cpu"), "fp32") is None
    monkeypatch.setattr(accel, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(GafiError, match="bf16"):
        autocast_dtype(torch.device("cpu"), "bf16")
    monkeypatch.setattr(accel, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16
    with pytest.raises(GafiError, match="precision"):
        autocast_dtype(torch.device("cpu"), "fp8")


def test_random_crop_matches_per_image_slicing():
    x = torch.randn(12, 3, 6, 5)
    out = random_crop(x, 2, torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    dy = torch.randint(0, 5, (12,), generator=gen)
    dx = torch.randint(0, 5, (12,), generator=gen)
    padded = nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    for i in range(12):
        assert torch.equal(out[i], padded[i, :, dy[i] : dy[i] + 6, dx[i] : dx[i] + 5])


def test_trainer_reuses_a_model_slot_with_fresh_seeded_weights():
    spec = ClassifierSpec(epochs=2, width=4, batch_size=8, augment=("crop",), crop_padding=1)
    fresh = ClassifierTrainer(spec, (1, 8, 8), 3, torch.device("cpu"), seed=5)
    slot = ModelSlot(fresh.model.__class__(1, 3, width=4), torch.device("cpu"), compile=False)
    first = ClassifierTrainer(spec, (1, 8, 8), 3, torch.device("cpu"), seed=5, slot=slot)
    for (name, a), b in zip(fresh.model.state_dict().items(), first.model.state_dict().values()):
        assert torch.equal(a, b), name  # same initial weights as a fresh build with this seed
    images = torch.randint(0, 256, (24, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(24) % 3
    first.train_epoch(images, labels)
    second = ClassifierTrainer(spec, (1, 8, 8), 3, torch.device("cpu"), seed=5, slot=slot)
    assert second.model is first.model  # one module per worker ...
    assert torch.equal(second.model.head.weight, fresh.model.head.weight)  # ... re-initialised per trial
    assert second.model.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert 0.0 <= second.evaluate(images, labels) <= 1.0


# ---------------------------------------------------------------- budgeted stages


def budget_spec(*extra):
    return load_spec(DIGITS, ["checkpoint.search=tpe", "checkpoint.pruner=sha", "checkpoint.n_trials=6",
                              "stddev.search=gp", "stddev.pruner=hyperband", "cas.epochs=15", *extra])


def test_budgeted_stages_build_tpe_gp_sha_and_hyperband():
    spec = budget_spec()
    tpe, gp = make_sampler(spec, "checkpoint"), make_sampler(spec, "stddev")
    assert isinstance(tpe, UniquePointSampler) and isinstance(tpe.base, optuna.samplers.TPESampler)
    assert isinstance(gp, UniquePointSampler) and isinstance(gp.base, optuna.samplers.GPSampler)
    sha, hyperband = make_pruner(spec, "checkpoint"), make_pruner(spec, "stddev")
    assert isinstance(sha, optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    # First cut right after the first learning-rate drop (epoch 9 of 15), unless the spec says otherwise.
    assert pruner_min_epochs(spec, "checkpoint") == 10
    assert pruner_min_epochs(budget_spec("checkpoint.pruner_min_epochs=3"), "checkpoint") == 3
    assert trial_budget(spec, "checkpoint") == 6 and trial_budget(spec, "stddev") == 9 // 4
    assert not isinstance(make_sampler(spec, "threshold"), UniquePointSampler)  # grid stage: enqueued trials only


@pytest.mark.parametrize("stage, search", [("checkpoint", "tpe"), ("stddev", "gp")])
def test_budgeted_search_never_repeats_a_grid_point(stage, search):
    # GP proposes deterministically (a repeat is replaced by the nearest free point); TPE is re-drawn.
    spec = budget_spec(f"{stage}.search={search}", f"{stage}.n_trials=12", "stddev.values=[1.0, 1.2, 1.4, 1.6, 1.8, 2.0]")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(spec, stage))
    points = 10 if stage == "checkpoint" else 6
    seen = []
    for _ in range(points):
        trial = study.ask()
        value = suggest(trial, spec, stage)
        seen.append(value)
        study.tell(trial, -abs(float(value) - (55 if stage == "checkpoint" else 1.5)))
    assert len(set(seen)) == points  # every grid point once
    assert all(v == round(v, 9) for v in seen)
    trial = study.ask()  # the grid exhausted: sampling goes on
    assert suggest(trial, spec, stage) in seen


def test_a_budgeted_checkpoint_stage_starts_at_the_last_checkpoint():
    spec = budget_spec()  # checkpoint: tpe, 6 trials; stddev: gp, 9 // 4 trials
    assert stage_slot_params(spec, "checkpoint") == [{"checkpoint": 100}] + [{}] * 5
    assert stage_slot_params(spec, "stddev") == [{}] * 2  # no free point: it would win by the winner's curse
    # A grid stage takes its points spread over the range (the last, the first, the middle, ...), so a
    # median pruner compares each trial with a sample of the whole curve.
    assert stage_slot_params(spec, "threshold") == [{"threshold": round(0.1 * i, 9)} for i in (9, 0, 4, 2, 6, 1, 3, 5, 7, 8)]


def test_same_recipe_ignores_the_stage_and_float_noise():
    a = TrialConfig("checkpoint", 90, 1.0, 0.0, 10, 0)
    assert same_recipe(a, TrialConfig("stddev", 90, 1.0, 0.0, 10, 0))
    assert same_recipe(TrialConfig("threshold", 90, 1.7000000000000002, 0.0, 10, 0), TrialConfig("stddev", 90, 1.7, 0.0, 10, 0))
    for other in (TrialConfig("stddev", 90, 1.1, 0.0, 10, 0), TrialConfig("stddev", 90, 1.0, None, 10, 0),
                  TrialConfig("stddev", 90, 1.0, 0.0, 1, 0), TrialConfig("stddev", 90, 1.0, 0.0, 10, 1)):
        assert not same_recipe(a, other)


def test_successive_halving_cuts_a_worse_trial_at_its_first_rung():
    spec = budget_spec("checkpoint.pruner_min_epochs=2")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(spec, "checkpoint"))
    good = study.ask()
    for epoch in range(1, 16):
        good.report(0.9, epoch)
        assert not good.should_prune()
    study.tell(good, 0.9)
    bad = study.ask()
    bad.report(0.1, 1)
    assert not bad.should_prune()  # before the first rung nothing is cut
    bad.report(0.1, 2)
    assert bad.should_prune()


def test_spec_validates_the_speed_keys():
    assert load_spec(DIGITS, ["compile=true"]).compile is True
    assert load_spec(DIGITS).compile is False and load_spec(DIGITS).precision == "auto"
    assert load_spec(DIGITS, ["precision=bf16"]).precision == "bf16"
    for bad, match in [("compile=1", "compile"), ("compile=yes", "compile"), ("precision=fp16", "precision"),
                       ("checkpoint.pruner_reduction=1", "pruner_reduction"), ("stddev.pruner_min_epochs=-1", "pruner_min_epochs"),
                       ("threshold.n_trials=-2", "n_trials"), ("checkpoint.search=random", "search")]:
        with pytest.raises(GafiError, match=match):
            load_spec(DIGITS, [bad])


def test_a_compiled_pipeline_compiles_once_and_reuses_it_across_trials(tiny_pipeline, tmp_path):
    """`compile = true` end to end: every trial of every stage runs through the worker's compiled models,
    and later trials reuse the compiled code instead of compiling again."""
    import shutil
    from pathlib import Path

    from click.testing import CliRunner
    from conftest import tiny_overrides
    from torch._dynamo.utils import counters

    from gafi_opt.cli import main

    spec, _ = tiny_pipeline
    run_dir = tmp_path / "compiled"
    run_dir.mkdir()
    for name in ("filter.pt", "data.json"):  # the trained models of the tiny pipeline, as a second study reuses them
        shutil.copy(Path(spec.run_dir) / name, run_dir / name)
    shutil.copytree(Path(spec.run_dir) / "generator", run_dir / "generator")
    overrides = [*tiny_overrides(run_dir, name="compiled"), "compile=true"]

    def run(extra):
        args = ["run", str(DIGITS), "--quiet"] + [arg for o in [*overrides, *extra] for arg in ("--set", o)]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result

    graphs_before = counters["stats"]["unique_graphs"]
    result = run([])
    graphs_first = counters["stats"]["unique_graphs"] - graphs_before
    assert graphs_first > 0  # the models really went through torch.compile
    assert "| compiled | digits |" in result.output  # the final table

    storage = optuna.storages.RDBStorage(load_spec(DIGITS, overrides).storage_url)
    trials = [t for s in optuna.get_all_study_summaries(storage) for t in optuna.load_study(study_name=s.study_name, storage=storage).trials]
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(finished) >= 9 and all(t.state != optuna.trial.TrialState.FAIL for t in trials)
    # One worker ran every trial (7 graphs for 10 trials with torch 2.14): the filter, the generator slot and the
    # classifier slot, each in a few shapes and modes; compiling per trial would make three or more per trial.
    assert graphs_first <= 9
