"""Classification Accuracy Score: train a classifier on synthetic data, test it on real data.

`CasObjective` is that trial as the worker loop runs it (reusing an identical earlier result where it can).

`TrialContext` holds what every trial of a worker shares (real data on the device, the
filter classifier, recently used generator checkpoints); `train_cas` runs one trial:
it builds the SyntheticSource for a TrialConfig, trains the CAS classifier with the
Dynamic Dataset Recycle schedule, reports real-val accuracy per epoch to Optuna (which
may prune the trial) and returns val and test accuracy with the synthesis statistics.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import torch
from tqdm.auto import tqdm

from gafi_opt.data import RealData, to_float
from gafi_opt.data.fingerprint import bind_run_data
from gafi_opt.models.checkpoints import load_generator, require_checkpoints
from gafi_opt.models.compiled import CompiledModels
from gafi_opt.search.reuse import replay
from gafi_opt.search.stages import TrialConfig
from gafi_opt.spec import Spec
from gafi_opt.synth import SyntheticSource, prepare_filter, prepare_generator
from gafi_opt.train.classifier import ClassifierTrainer
from gafi_opt.train.real import load_filter

SAMPLES_PER_CLASS = 10  # images per class kept in CasResult.samples


@dataclass
class CasResult:
    val_acc: float
    test_acc: float
    epochs: int
    seconds: float
    acceptance_rate: float
    fallback: int
    filled: int  # slots the synthetic set filled over the trial (fallback ones included)
    val_history: list[float] = field(default_factory=list)
    val_soft_history: list[float] = field(default_factory=list)  # per epoch: mean val probability of the true class
    pruned: bool = False
    same_set_thresholds: tuple[float, float] | None = None  # SyntheticSource.same_set_thresholds
    # A few images per class of the final synthetic set (uint8, CPU), for the dashboard's sample grid.
    samples: torch.Tensor | None = field(default=None, repr=False)

    def user_attrs(self) -> dict:
        # A pruned trial was never tested: it gets no test_acc rather than a NaN.
        tested = {} if self.pruned else {"test_acc": self.test_acc}
        same_set = {} if self.same_set_thresholds is None else {"same_set_thresholds": list(self.same_set_thresholds)}
        return {
            "val_acc": self.val_acc,
            **tested,
            "classifier_epochs": self.epochs,
            "seconds": round(self.seconds, 3),
            "acceptance_rate": self.acceptance_rate,
            "fallback_samples": self.fallback,
            "fallback_fraction": round(self.fallback / self.filled, 4) if self.filled else 0.0,
            # 4 decimals (finer than any val set's accuracy step) keep the dashboard's attribute line short.
            "val_history": [round(v, 4) for v in self.val_history],
            "val_soft_history": [round(v, 5) for v in self.val_soft_history],
            **same_set,
        }


class TrialContext:
    """What the trials of one worker share; loaded once per worker."""

    GENERATOR_CACHE = 2

    def __init__(self, spec: Spec, data: RealData, device: torch.device):
        self.spec = spec
        self.data = data
        self.device = device
        bind_run_data(spec, data)  # the real subset the filter and generator were trained on
        self.train = (data.train_x.to(device), data.train_y.to(device))
        self.val = (data.val_x.to(device), data.val_y.to(device))
        self.test = (data.test_x.to(device), data.test_y.to(device))
        self.filter_model = load_filter(spec, data.image_shape, data.num_classes, device)
        self._generators: OrderedDict[int, torch.nn.Module] = OrderedDict()
        # spec.compile: generator, filter and CAS classifier compiled once, for every trial of this worker.
        self.compiled = CompiledModels(spec, data.image_shape, data.num_classes, device, self.filter_model, data.val_x) if spec.compile else None
        if self.compiled is not None:
            self.filter_model = self.compiled.filter
        else:  # BatchNorm folded, channels_last: prepared once, not per trial
            self.filter_model = prepare_filter(self.filter_model, device, to_float(self.val[0][:8]), spec.precision)

    def generator(self, epoch: int) -> torch.nn.Module:
        if self.compiled is not None:
            return self.compiled.generator(epoch)
        if epoch not in self._generators:
            path = require_checkpoints(self.spec, [epoch])[epoch]
            generator = load_generator(self.spec, path, self.data.image_shape, self.data.num_classes, self.device)
            self._generators[epoch] = prepare_generator(generator, self.device, self.data.num_classes, self.spec.precision)
            while len(self._generators) > self.GENERATOR_CACHE:
                self._generators.popitem(last=False)
        self._generators.move_to_end(epoch)
        return self._generators[epoch]

    @property
    def per_class(self) -> int:
        """Synthetic images per class: the spec's, else real train size / classes (paper)."""
        if self.spec.synth.samples_per_class:
            return self.spec.synth.samples_per_class
        if self.spec.objective == "augment":
            return max(1, round(self.spec.augment_ratio * self.data.train_y.numel() / self.data.num_classes))
        return max(1, self.data.train_y.numel() // self.data.num_classes)

    def source(self, config: TrialConfig, per_class: int | None = None) -> SyntheticSource:
        """The config's synthetic set: `per_class` images of every class (default: the pipeline's, `self.per_class`)."""
        synth = self.spec.synth
        generator = self.generator(config.checkpoint)
        if config.sampler is not None:  # a diffusion generator samples with the trial's knobs
            generator.configure(sampler=config.sampler, steps=config.steps, guidance=config.guidance)
        return SyntheticSource(
            generator,
            self.data.num_classes,
            per_class or self.per_class,
            stddev=config.stddev,
            threshold=config.threshold,
            filter_model=self.filter_model if config.threshold is not None else None,
            max_attempts=synth.max_attempts,
            batch_size=synth.batch_size,
            device=self.device,
            seed=config.seed,
            precision=self.spec.precision,
        )


def train_cas(
    ctx: TrialContext, config: TrialConfig, trial: optuna.Trial | None = None, progress: bool = False, source=None
) -> CasResult:
    """Train one CAS classifier on the synthetic stream of `config`. Raises TrialPruned when cut.

    `source` replaces the config's SyntheticSource with any set that has `images`, `labels`,
    `num_classes`, `stats`, `fill(progress=)` and `recycle(fraction)` (multigen's MultiSource);
    `config` then gives only the seed and the recycle period.
    """
    spec = ctx.spec
    started = time.perf_counter()
    source = ctx.source(config) if source is None else source
    source.fill(progress=progress)
    slot = ctx.compiled.classifier if ctx.compiled is not None else None
    trainer = ClassifierTrainer(
        spec.cas, ctx.data.image_shape, ctx.data.num_classes, ctx.device, seed=config.seed, precision=spec.precision, slot=slot
    )
    history: list[float] = []
    soft_history: list[float] = []
    bar = tqdm(range(1, spec.cas.epochs + 1), desc=f"{config.stage} trial", unit="epoch", leave=False, disable=not progress)
    for epoch in bar:
        if config.recycle_every and epoch > 1 and (epoch - 1) % config.recycle_every == 0:
            source.recycle(spec.synth.recycle_fraction)
        images, labels = _training_set(ctx, source)
        trainer.train_epoch(images, labels)
        accuracy, soft = trainer.scores(*ctx.val)
        history.append(accuracy)
        soft_history.append(soft)
        bar.set_postfix(val_acc=f"{history[-1]:.4f}", accept=f"{source.stats.acceptance_rate:.2f}")
        if trial is not None:
            trial.report(history[-1], epoch)
            if trial.should_prune():
                result = _result(ctx, trainer, source, history, soft_history, started, test=False)
                result.pruned = True
                for key, value in result.user_attrs().items():
                    trial.set_user_attr(key, value)
                pruned = optuna.TrialPruned(f"pruned at epoch {epoch} with val accuracy {history[-1]:.4f}")
                pruned.result = result  # so the worker can still publish what the trial trained on
                raise pruned
    bar.close()
    return _result(ctx, trainer, source, history, soft_history, started, test=True)


def _training_set(ctx: TrialContext, source: SyntheticSource) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic-only (CAS) or, in augment mode, the real train subset plus the synthetic set."""
    if ctx.spec.objective == "augment":
        return torch.cat([ctx.train[0], source.images]), torch.cat([ctx.train[1], source.labels])
    return source.images, source.labels


def _result(ctx, trainer, source, history, soft_history, started, test: bool) -> CasResult:
    return CasResult(
        val_acc=history[-1],
        test_acc=trainer.evaluate(*ctx.test) if test else float("nan"),
        epochs=len(history),
        seconds=time.perf_counter() - started,
        acceptance_rate=source.stats.acceptance_rate,
        fallback=int(source.stats.fallback.sum()),
        filled=int(source.filled),
        val_history=history,
        val_soft_history=soft_history,
        same_set_thresholds=getattr(source, "same_set_thresholds", None),  # multigen's MultiSource has none
        samples=_class_samples(source, SAMPLES_PER_CLASS),
    )


def _class_samples(source: SyntheticSource, count: int) -> torch.Tensor:
    """The first `count` images of every class in the set as it stands: uint8 (classes, count, C, H, W) on the CPU."""
    order = torch.argsort(source.labels, stable=True)
    by_class = source.images[order].view(source.num_classes, -1, *source.images.shape[1:])
    return by_class[:, :count].cpu()


class CasObjective:
    """The CAS trial of the one worker loop (gafi_opt.pipeline.loop): `objective(trial, stage, config) -> val CAS`.

    Every kind of trial that trains a CAS classifier (a pipeline's stages, a multigen study, the
    benchmarks) goes through it, so each gets the same user attributes and the same hooks (the
    loop's TrialHooks: the dashboard's note and sample grid).

    `context` is the worker's TrialContext, or a function making it on the first trial (so a worker
    that finds nothing to do loads no data). `source(context, config)` replaces the config's own
    synthetic set (multigen draws from several generators). A plan with `trial_to_reuse` (a pipeline)
    lets a trial whose data recipe repeats an earlier stage's best take that result instead of training.
    """

    def __init__(
        self,
        plan,
        context: TrialContext | Callable[[], TrialContext],
        hooks=None,
        progress: bool = False,
        source: Callable[[TrialContext, TrialConfig], object] | None = None,
    ):
        self.plan = plan
        self._context = context
        self.hooks = hooks
        self.progress = progress
        self.source = source

    @property
    def context(self) -> TrialContext:
        if not isinstance(self._context, TrialContext):
            self._context = self._context()
        return self._context

    def __call__(self, trial: optuna.Trial, stage: str, config: TrialConfig) -> float:
        earlier = self._reusable(trial, stage, config)
        if earlier is not None:  # the same data and seed as a finished trial: the same result
            value = replay(trial, *earlier)
            if self.hooks is not None:
                self.hooks.trial_reused(self.plan, trial.study, trial, config, *earlier)
            return value
        context = self.context
        source = None if self.source is None else self.source(context, config)
        try:
            result = train_cas(context, config, trial, progress=self.progress, source=source)
        except optuna.TrialPruned as pruned:
            if self.hooks is not None:
                self.hooks.trial_trained(self.plan, trial.study, trial, config, getattr(pruned, "result", None), pruned=True)
            raise
        for key, value in result.user_attrs().items():
            trial.set_user_attr(key, value)
        if self.hooks is not None:
            self.hooks.trial_trained(self.plan, trial.study, trial, config, result, pruned=False)
        return result.val_acc

    def _reusable(self, trial: optuna.Trial, stage: str, config: TrialConfig):
        find = getattr(self.plan, "trial_to_reuse", None)
        return None if find is None else find(stage, config, trial.study.user_attrs.get("fixed", {}))
