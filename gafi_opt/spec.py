"""The study spec: a study file (TOML) validated into frozen dataclasses.

A spec is everything a worker needs to run a pipeline. It is stored as JSON in the
pipeline's Optuna user attrs, so a process that knows only the storage URL and the
pipeline name can continue the work.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gafi_opt.errors import GafiError

STAGE_NAMES = ("checkpoint", "stddev", "threshold", "final")
DIFFUSION_STAGE_NAMES = ("sampler", "guidance", "steps")  # stages of generator.arch = "diffusion" only
DIFFUSION_ARCH = "diffusion"
SAMPLERS = ("ddim", "dpm-solver", "ddpm")  # gafi_opt.models.diffusion builds them
PREDICTION_TYPES = ("epsilon", "v_prediction")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")  # diffusers' names
DATA_SOURCES = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "cinic10", "npz", "folder")
SEARCH_MODES = ("grid", "tpe", "gp")
PRUNERS = ("none", "median", "percentile", "sha", "hyperband")
AUGMENTATIONS = ("flip", "crop", "cutout")
DIFFAUG_OPS = ("color", "translation", "cutout")  # gafi_opt.data.augment.diff_augment
OBJECTIVES = ("synthetic-only", "augment")
PRECISIONS = ("auto", "fp32", "bf16")  # gafi_opt.accel applies them
RULES = ("argmax", "fresh", "late", "robust", "trend", "soft")  # gafi_opt.search.selection: each adds one remedy to the one before
SEARCH_STAGE_NAMES = ("checkpoint", "stddev", "threshold")
# `--paper-selection`; a GAN ignores its diffusion stages' rules
PAPER_SELECTION = ["selection=test", *(f"{stage}.rule=argmax" for stage in (*SEARCH_STAGE_NAMES, *DIFFUSION_STAGE_NAMES))]

# Sizes past which a value is a typo, not a study: each would fill memory or run for days.
MAX_GRID_POINTS = 10_000  # values of one stage's grid (and trials of one budgeted stage)
MAX_IMAGE_SIDE = 1024  # data.image_size, and the side of any image a source reads
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536
MAX_WIDTH = 4_096  # channels or hidden units
MAX_LATENT = 16_384
MAX_SEED = 2**31 - 1  # seed + final.seeds stays below 2**32, numpy's limit


@dataclass(frozen=True)
class DataSpec:
    source: str = "digits"
    root: str = ""  # dataset folder (torchvision, image folder) or the .npz file
    download: bool = False  # torchvision sources only; never at test time
    val_fraction: float = 0.15  # carved from train (stratified, seeded) when a source has no val split
    test_fraction: float = 0.2  # carved first, only for sources with no test split (digits)
    image_size: int = 0  # zero-pad to this size (28 -> 32); 0 keeps the native size
    resize: bool = False  # reach image_size by Lanczos resizing instead of padding (official DermaMNIST setup)
    merge_val: bool = False  # fold the source's val split into train, then carve val_fraction (official CINIC-10 setup)
    real_fraction: float = 1.0  # stratified fraction of real train used for every model (data-scarce runs)
    split_seed: int = 0


@dataclass(frozen=True)
class DiffusionSpec:
    """A class-conditional diffusers UNet2DModel (generator.arch = "diffusion"), how it is trained, and
    how it samples before the stages have chosen; block_out_channels = generator.width * channel_mult."""

    channel_mult: tuple[int, ...] = (1, 2)  # one UNet level per entry; each level but the last halves the side
    layers_per_block: int = 1
    attention: tuple[bool, ...] = ()  # per level: self-attention blocks (empty: none)
    mid_attention: bool = False  # self-attention in the middle block
    norm_groups: int = 8  # GroupNorm groups; must divide every level's channels
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # a diffusers beta_schedule: linear, scaled_linear, squaredcos_cap_v2
    prediction_type: str = "epsilon"  # or v_prediction
    label_dropout: float = 0.1  # labels replaced by the unconditional index while training (classifier-free guidance)
    # Sampling before (and without) the guidance, steps and sampler stages: the baseline and the checkpoint stage use these.
    guidance: float = 0.0  # w in eps = (1 + w) eps(x, y) - w eps(x, unconditional); 0: plain conditional sampling
    steps: int = 20
    sampler: str = "dpm-solver"  # ddim, dpm-solver (DPM-Solver++ 2M) or ddpm


@dataclass(frozen=True)
class GeneratorSpec:
    arch: str = "mlp"  # mlp, dcgan, biggan-deep, diffusion, or a factory "package.module:function"
    latent_dim: int = 32
    width: int = 128
    embed_dim: int = 128  # shared class embedding (biggan-deep)
    epochs: int = 100
    batch_size: int = 64
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    d_steps: int = 1  # discriminator steps per generator step
    ema_decay: float = 0.999
    ema_start: int = 0  # generator step from which EMA averaging starts (weights copied before)
    diffaug: tuple[str, ...] = ()  # DiffAugment for small data: any of color, translation, cutout (real and fake alike)
    checkpoints: str = ""  # bring your own, skipping training: a folder or glob of {epoch}.pt state dicts (diffusion: of UNet2DModel folders, or one)
    options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for a factory
    diffusion: DiffusionSpec = field(default_factory=DiffusionSpec)  # arch "diffusion" only


@dataclass(frozen=True)
class ClassifierSpec:
    arch: str = "small-cnn"  # small-cnn or resnet20
    width: int = 32
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4  # decoupled: p <- p * (1 - weight_decay * lr_t / lr), every step
    lr_milestones: tuple[float, ...] = (0.6, 0.8)  # fractions of the epochs after which lr is x0.1
    augment: tuple[str, ...] = ("crop",)
    crop_padding: int = 4
    cutout_size: int = 8
    eval_batch_size: int = 1024


@dataclass(frozen=True)
class SynthSpec:
    samples_per_class: int = 0  # 0: real train size / number of classes, as in the paper
    max_attempts: int = 10  # filtering rounds before the rest is filled with unfiltered samples
    batch_size: int = 1024  # images per generator / filter forward pass
    recycle_fraction: float = 1.0  # share of the set renewed at each recycle


@dataclass(frozen=True)
class StageSpec:
    search: str = "grid"  # grid: every value once (paper); tpe or gp: a budgeted search over the range
    values: tuple[float, ...] = ()
    n_trials: int = 0  # budget of a tpe/gp search (0: a quarter of the grid)
    recycle_every: int = 10  # Dynamic Dataset Recycle period N, in classifier epochs
    pruner: str = "median"
    pruner_warmup: int = 0  # median/percentile: first epoch that may be cut (0: the epoch after cas's first lr milestone)
    pruner_startup_trials: int = 3
    pruner_min_epochs: int = 0  # sha/hyperband: epochs before the first cut (0: the epoch after cas's first lr milestone)
    pruner_reduction: int = 3  # sha/hyperband: keep 1 trial in this many at each rung
    seeds: int = 1  # repetitions of each point with different seeds (final stage)
    rule: str = "trend"  # how a search stage chooses (gafi_opt.search.selection): argmax (paper), fresh, late, robust, trend, soft


@dataclass(frozen=True)
class SamplerStageSpec(StageSpec):
    """The sampler stage's values are sampler names; its stage runs only when they are listed."""

    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Spec:
    name: str
    seed: int = 0
    run_dir: str = ""  # default runs/<name>
    storage: str = ""  # default sqlite:///<run_dir>/gafi.db
    device: str = "auto"
    selection: str = "val"  # val, or test to reproduce the paper's (test-selected) choices
    objective: str = "synthetic-only"  # or augment: real subset + synthetic at augment_ratio
    augment_ratio: float = 1.0  # synthetic images per real image in augment mode
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU), fp32, or bf16 (CPU: needs native bf16, e.g. AMX)
    compile: bool = False  # torch.compile generator, filter and CAS classifier once per worker, reused by its trials
    data: DataSpec = field(default_factory=DataSpec)
    generator: GeneratorSpec = field(default_factory=GeneratorSpec)
    filter: ClassifierSpec = field(default_factory=lambda: ClassifierSpec(epochs=30))
    cas: ClassifierSpec = field(default_factory=ClassifierSpec)
    synth: SynthSpec = field(default_factory=SynthSpec)
    checkpoint: StageSpec = field(default_factory=StageSpec)
    stddev: StageSpec = field(default_factory=StageSpec)
    threshold: StageSpec = field(default_factory=StageSpec)
    sampler: SamplerStageSpec = field(default_factory=SamplerStageSpec)
    guidance: StageSpec = field(default_factory=StageSpec)
    steps: StageSpec = field(default_factory=StageSpec)
    final: StageSpec = field(default_factory=lambda: StageSpec(recycle_every=1, seeds=3, pruner="none"))

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name}")

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.run_path / 'gafi.db'}"

    @property
    def is_diffusion(self) -> bool:
        return self.generator.arch == DIFFUSION_ARCH

    def stage(self, name: str) -> StageSpec:
        return getattr(self, name)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Spec":
        return spec_from_dict(json.loads(text), "stored spec")

    def with_overrides(self, overrides: list[str]) -> "Spec":
        raw = json.loads(self.to_json())
        apply_overrides(raw, overrides)
        return spec_from_dict(raw, "spec with overrides")


# ---------------------------------------------------------------- loading


def load_spec(path: str | Path, overrides: list[str] = ()) -> Spec:
    """Read a study file, apply `key=value` overrides and validate. Raises GafiError."""
    path = Path(path)
    if not path.is_file():
        raise GafiError(f"study file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # editors on Windows may start the file with a BOM
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GafiError(f"study file {path} is not valid TOML: {exc}") from None
    raw.setdefault("name", path.stem)
    apply_overrides(raw, list(overrides))
    return spec_from_dict(raw, str(path))


def apply_overrides(raw: dict, overrides: list[str]) -> None:
    """Apply `a.b.c=value` strings; the value is read as a TOML literal, else as a string."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise GafiError(f"--set expects key=value, got {item!r}")
        *parents, leaf = key.strip().split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GafiError(f"--set {key}: {part!r} is not a table")
        node[leaf] = _parse_literal(text.strip())


def _parse_literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def spec_from_dict(raw: dict, origin: str) -> Spec:
    spec = _build(Spec, raw, origin, prefix="")
    _validate(spec, origin)
    return spec


def _build(cls, raw: Any, origin: str, prefix: str):
    if not isinstance(raw, dict):
        raise GafiError(f"{origin}: {prefix.rstrip('.') or 'spec'} must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise GafiError(f"{origin}: unknown key '{prefix}{unknown[0]}' (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}{name}"
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, origin, prefix=f"{key}.")
        elif name == "values" and cls is StageSpec:
            kwargs[name] = _grid_values(value, origin, key)
        else:
            kwargs[name] = _coerce(value, hint, origin, key)
    if "name" in names and "name" not in kwargs:
        raise GafiError(f"{origin}: missing key 'name'")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, origin: str, key: str) -> Any:
    origin_type = typing.get_origin(hint)
    if origin_type is tuple:
        if not isinstance(value, (list, tuple)):
            raise GafiError(f"{origin}: {key} must be a list, got {value!r}")
        args = typing.get_args(hint)
        item_hint = args[0]
        if len(args) == 2 and args[1] is not Ellipsis and len(value) != 2:
            raise GafiError(f"{origin}: {key} must have 2 items, got {len(value)}")
        return tuple(_coerce(v, item_hint, origin, key) for v in value)
    if origin_type is dict:
        if not isinstance(value, dict):
            raise GafiError(f"{origin}: {key} must be a table")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise GafiError(f"{origin}: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GafiError(f"{origin}: {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GafiError(f"{origin}: {key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise GafiError(f"{origin}: {key} must be a string, got {value!r}")
        return value
    return value


def _grid_values(value: Any, origin: str, key: str) -> tuple[float, ...]:
    """A grid is a list of numbers or a table {start, stop, step} with stop included."""
    if isinstance(value, dict):
        extra = set(value) - {"start", "stop", "step"}
        if extra or not {"start", "stop", "step"} <= set(value):
            raise GafiError(f"{origin}: {key} must be a list or a table with start, stop and step")
        start, stop, step = (_coerce(value[k], float, origin, f"{key}.{k}") for k in ("start", "stop", "step"))
        for name, number in (("start", start), ("stop", stop), ("step", step)):
            if not math.isfinite(number):
                raise GafiError(f"{origin}: {key}.{name} must be a finite number, got {number}")
        if step <= 0 or stop < start:
            raise GafiError(f"{origin}: {key} needs step > 0 and stop >= start")
        points = (stop - start) / step + 1  # counted before anything is materialised
        if not points <= MAX_GRID_POINTS:
            raise GafiError(f"{origin}: {key} makes {points:.3g} grid points, more than {MAX_GRID_POINTS}: raise step or narrow start..stop")
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        return tuple(round(start + i * step, 10) for i in range(count))
    values = _coerce(value, tuple[float, ...], origin, key)
    if len(values) > MAX_GRID_POINTS:
        raise GafiError(f"{origin}: {key} lists {len(values)} values, more than {MAX_GRID_POINTS}")
    return values


# ---------------------------------------------------------------- validation


@dataclass(frozen=True)
class Range:
    """The values one number of the spec may take: low to high, an end included unless marked open."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        low, high = _plain(self.low), _plain(self.high)
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


POSITIVE = Range(0, low_open=True)
FRACTION = Range(0, 1, low_open=True, high_open=True)  # (0, 1)
SHARE = Range(0, 1, low_open=True)  # (0, 1]
UNIT = Range(0, 1, high_open=True)  # [0, 1): betas, momentum, decays
SEED = Range(0, MAX_SEED)
EPOCHS = Range(1, MAX_EPOCHS)
BATCH = Range(1, MAX_BATCH)
WIDTH = Range(1, MAX_WIDTH)
LR = Range(0, 10, low_open=True)

# The range of every number in a spec (a tuple's items each), checked before anything is prepared or
# trained; tests/test_hostile_input.py checks that no numeric field is missing. A stage's `values`
# depend on the stage and are checked in _validate.
RANGES: dict[type, dict[str, Range]] = {
    Spec: {"seed": SEED, "augment_ratio": Range(0, 100, low_open=True)},
    DataSpec: {
        "val_fraction": FRACTION,
        "test_fraction": FRACTION,
        "image_size": Range(0, MAX_IMAGE_SIDE),
        "real_fraction": SHARE,
        "split_seed": SEED,
    },
    GeneratorSpec: {
        "latent_dim": Range(1, MAX_LATENT),
        "width": WIDTH,
        "embed_dim": WIDTH,
        "epochs": EPOCHS,
        "batch_size": BATCH,
        "lr": LR,
        "betas": UNIT,
        "d_steps": Range(1, 100),
        "ema_decay": UNIT,
        "ema_start": Range(0, 2**31 - 1),
    },
    ClassifierSpec: {
        "width": WIDTH,
        "epochs": EPOCHS,
        "batch_size": BATCH,
        "lr": LR,
        "momentum": UNIT,
        "weight_decay": UNIT,  # decoupled: weights shrink by weight_decay per step at the base lr
        "lr_milestones": FRACTION,
        "crop_padding": Range(0, MAX_IMAGE_SIDE),
        "cutout_size": Range(0, MAX_IMAGE_SIDE),
        "eval_batch_size": BATCH,
    },
    SynthSpec: {
        "samples_per_class": Range(0, 100_000),
        "max_attempts": Range(1, 1000),
        "batch_size": BATCH,
        "recycle_fraction": SHARE,
    },
    StageSpec: {
        "n_trials": Range(0, MAX_GRID_POINTS),
        "recycle_every": Range(0, MAX_EPOCHS),
        "pruner_warmup": Range(0, MAX_EPOCHS),
        "pruner_startup_trials": Range(0, MAX_GRID_POINTS),
        "pruner_min_epochs": Range(0, MAX_EPOCHS),
        "pruner_reduction": Range(2, 100),
        "seeds": Range(1, 1000),
    },
    DiffusionSpec: {
        "channel_mult": Range(1, 64),
        "layers_per_block": Range(1, 16),
        "norm_groups": Range(1, MAX_WIDTH),
        "train_timesteps": Range(1, 100_000),
        "label_dropout": UNIT,
        "guidance": Range(0, 100),
        "steps": Range(1, 10_000),
    },
}
RANGES[SamplerStageSpec] = RANGES[StageSpec]


def _check_numbers(node: Any, prefix: str, fail) -> None:
    """Every number finite (nan != nan would make a stored spec differ from itself) and in its range."""
    for item in dataclasses.fields(node):
        value, key = getattr(node, item.name), f"{prefix}{item.name}"
        if dataclasses.is_dataclass(value):
            _check_numbers(value, f"{key}.", fail)
            continue
        _check_finite(value, key, fail)
        allowed = RANGES.get(type(node), {}).get(item.name)
        if allowed is None:
            continue
        if isinstance(value, tuple):
            if any(v not in allowed for v in value):
                fail(f"{key} must each be {allowed}, got {list(value)}")
        elif value not in allowed:
            fail(f"{key} must be {allowed}, got {value!r}")


def _check_finite(value: Any, key: str, fail) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        fail(f"{key} must be a finite number, got {value}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_finite(item, key, fail)
    elif isinstance(value, dict):  # generator.options reach a factory, and are stored with the spec
        for name, item in value.items():
            _check_finite(item, f"{key}.{name}", fail)


def _validate(spec: Spec, origin: str) -> None:
    def fail(message: str):
        raise GafiError(f"{origin}: {message}")

    _check_numbers(spec, "", fail)
    if not spec.name or "/" in spec.name:
        fail(f"name must be a non-empty string without '/', got {spec.name!r}")
    if spec.data.source not in DATA_SOURCES:
        fail(f"unknown dataset source {spec.data.source!r} (known: {', '.join(DATA_SOURCES)})")
    if spec.data.source in ("npz", "folder", "cinic10") and not spec.data.root:
        fail(f"data.root must name the {spec.data.source} data for this source")
    if spec.data.resize and spec.data.image_size <= 0:
        fail("data.resize needs data.image_size > 0 (the side to resize to)")
    if spec.selection not in ("val", "test"):
        fail("selection must be 'val' or 'test'")
    if spec.objective not in OBJECTIVES:
        fail(f"objective must be one of {', '.join(OBJECTIVES)}")
    if spec.precision not in PRECISIONS:
        fail(f"precision must be one of {', '.join(PRECISIONS)}, got {spec.precision!r}")
    if spec.objective == "augment" and spec.synth.samples_per_class:
        # Two sizes for one set would be ambiguous: in augment mode the ratio decides.
        fail("synth.samples_per_class must stay 0 with objective 'augment' (augment_ratio sets the synthetic set size)")
    unknown = [op for op in spec.generator.diffaug if op not in DIFFAUG_OPS]
    if unknown:
        fail(f"generator.diffaug: unknown operation {unknown[0]!r} (known: {', '.join(DIFFAUG_OPS)})")
    for part in ("filter", "cas"):
        cspec: ClassifierSpec = getattr(spec, part)
        bad = [a for a in cspec.augment if a not in AUGMENTATIONS]
        if bad:
            fail(f"{part}.augment: unknown augmentation {bad[0]!r} (known: {', '.join(AUGMENTATIONS)})")
    for name in STAGE_NAMES + DIFFUSION_STAGE_NAMES:
        stage = spec.stage(name)
        where = f"{name}."
        if stage.search not in SEARCH_MODES:
            fail(f"{where}search must be one of {', '.join(SEARCH_MODES)}")
        if stage.pruner not in PRUNERS:
            fail(f"{where}pruner must be one of {', '.join(PRUNERS)}")
        if stage.rule not in RULES:
            fail(f"{where}rule must be one of {', '.join(RULES)}, got {stage.rule!r}")
    if not spec.checkpoint.values:
        fail("checkpoint.values must list the generator epochs to compare")
    if any(v < 1 or v > MAX_EPOCHS or v != int(v) for v in spec.checkpoint.values):
        fail(f"checkpoint.values must be whole epochs in [1, {MAX_EPOCHS}]")
    if not spec.generator.checkpoints and max(spec.checkpoint.values) > spec.generator.epochs:
        fail(f"checkpoint.values go past generator.epochs ({spec.generator.epochs})")
    if not spec.stddev.values or any(v <= 0 for v in spec.stddev.values):
        fail("stddev.values must be numbers > 0")
    if not spec.threshold.values or any(not 0 <= v < 1 for v in spec.threshold.values):
        fail("threshold.values must lie in [0, 1)")
    if spec.is_diffusion:
        _validate_diffusion(spec, fail)
    elif any(spec.stage(name).values for name in DIFFUSION_STAGE_NAMES):
        fail(f"the {', '.join(DIFFUSION_STAGE_NAMES)} stages search a diffusion generator's knobs: they need generator.arch = 'diffusion'")


def _validate_diffusion(spec: Spec, fail) -> None:
    d = spec.generator.diffusion
    if spec.compile:
        fail("compile = true does not apply to generator.arch 'diffusion' (its sampling loop is Python); use precision for speed")
    if not d.channel_mult or any(m < 1 for m in d.channel_mult):
        fail("generator.diffusion.channel_mult must list one positive multiplier per UNet level")
    if d.attention and len(d.attention) != len(d.channel_mult):
        fail(f"generator.diffusion.attention must have one entry per level ({len(d.channel_mult)}), or be empty")
    if d.layers_per_block < 1 or d.train_timesteps < 2 or d.norm_groups < 1:
        fail("generator.diffusion.layers_per_block and generator.diffusion.norm_groups must be >= 1, generator.diffusion.train_timesteps >= 2")
    if any((spec.generator.width * m) % d.norm_groups for m in d.channel_mult):
        fail(f"generator.diffusion.norm_groups ({d.norm_groups}) must divide every level's channels (generator.width * channel_mult)")
    if d.prediction_type not in PREDICTION_TYPES:
        fail(f"generator.diffusion.prediction_type must be one of {', '.join(PREDICTION_TYPES)}")
    if d.beta_schedule not in BETA_SCHEDULES:
        fail(f"generator.diffusion.beta_schedule must be one of {', '.join(BETA_SCHEDULES)}")
    if not 0 <= d.label_dropout < 1:
        fail("generator.diffusion.label_dropout must be in [0, 1) (the share of labels dropped for classifier-free guidance)")
    if d.guidance < 0 or d.steps < 1 or d.sampler not in SAMPLERS:
        fail(f"generator.diffusion.guidance must be >= 0, generator.diffusion.steps >= 1 and generator.diffusion.sampler one of {', '.join(SAMPLERS)}")
    if not spec.guidance.values or any(v < 0 for v in spec.guidance.values):
        fail("guidance.values must list guidance scales >= 0 (0: plain conditional sampling)")
    if not spec.steps.values or any(v < 1 or v != int(v) for v in spec.steps.values):
        fail("steps.values must list whole numbers of sampling steps >= 1")
    unknown = [v for v in spec.sampler.values if v not in SAMPLERS]
    if unknown:
        fail(f"sampler.values: unknown sampler {unknown[0]!r} (known: {', '.join(SAMPLERS)})")
    if spec.sampler.values and spec.sampler.search != "grid":
        fail("sampler.search must be 'grid' (a few named samplers, each tried once)")
