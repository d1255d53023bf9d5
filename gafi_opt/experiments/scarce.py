"""The data-scarce comparison: real-only, real + synthetic (augment) and synthetic-only, per real fraction.

For every real fraction, two pipelines run on the same study: `synthetic-only` (CAS, the
paper's objective) and `augment` (the classifier trains on the real subset plus synthetic
data at `augment_ratio`). Both tune checkpoint, stddev and threshold for their own
objective and repeat their final stage over the same seeds. They share one run directory
per fraction, so the filter classifier and the generator are trained once per fraction, on
that fraction's real subset (`run_data` checks it). Each pipeline also holds the real-only
baseline (the CAS recipe on the real subset alone, same seeds and epochs).

Budget. An epoch over 10% of the data is a tenth of the optimisation steps: at the digits
preset's 15 CAS epochs a classifier on 120 real images takes 15 SGD steps and stays near
chance. With `budget="steps"` (the default) every training length given in epochs is
multiplied so that each model takes as many optimisation steps on the subset as on the
whole train split (generator epochs and checkpoint grid by the generator's batches per
epoch, filter and CAS epochs and the pruner warm-up by the classifiers'), so the
comparison is about how much real data there is, not about how long models train.
`budget="epochs"` keeps the study's epochs literally.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from gafi_opt.data import load_data, stratified_subset
from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline
from gafi_opt.report import summary_row
from gafi_opt.runner import run_pipeline
from gafi_opt.spec import DIFFUSION_STAGE_NAMES, STAGE_NAMES, Spec
from gafi_opt.storages import open_storage

MODES = ("synthetic-only", "augment")
BUDGETS = ("steps", "epochs")


def parse_fractions(text: str) -> list[float]:
    """'0.1,1.0' -> [0.1, 1.0]; each a number in (0, 1], no repeats."""
    fractions = []
    for item in text.split(","):
        item = item.strip()
        try:
            value = float(item)
        except ValueError:
            raise GafiError(f"--fractions: {item!r} is not a number (expected e.g. 0.1,1.0)") from None
        if not 0 < value <= 1 or math.isnan(value):
            raise GafiError(f"--fractions: {item} is not a real fraction in (0, 1]")
        if value in fractions:
            raise GafiError(f"--fractions: {item} is listed twice")
        fractions.append(value)
    return fractions


def _scaled(value: float, factor: float) -> int:
    return max(1, math.floor(value * factor + 0.5))


def gan_batches(n: int, batch_size: int) -> int:
    """Discriminator steps per generator-training epoch (train/gan.py drops the last partial batch)."""
    batch = min(batch_size, n)
    return n // batch


def classifier_batches(n: int, batch_size: int) -> int:
    """Steps per classifier epoch (train/classifier.py keeps the last partial batch)."""
    return math.ceil(n / batch_size)


def step_factors(spec: Spec, n_full: int, n_subset: int) -> dict[str, float]:
    """Epoch multipliers that give each model as many steps on `n_subset` images as on `n_full`."""
    return {
        "generator": gan_batches(n_full, spec.generator.batch_size) / gan_batches(n_subset, spec.generator.batch_size),
        "filter": classifier_batches(n_full, spec.filter.batch_size) / classifier_batches(n_subset, spec.filter.batch_size),
        "cas": classifier_batches(n_full, spec.cas.batch_size) / classifier_batches(n_subset, spec.cas.batch_size),
    }


def train_sizes(spec: Spec, fractions: list[float]) -> tuple[int, dict[float, int]]:
    """Real train images of the whole split and of each fraction's stratified subset (data.py's own)."""
    full = load_data(dataclasses.replace(spec.data, real_fraction=1.0))
    sizes = {f: int(full.train_y.numel()) if f >= 1 else int(stratified_subset(full.train_y, f, spec.data.split_seed).numel()) for f in fractions}
    return int(full.train_y.numel()), sizes


def _toml(value) -> str:
    return json.dumps(value)  # a JSON string or list of numbers is also a TOML literal


@dataclass(frozen=True)
class ScarcePlan:
    """Where a scarce comparison keeps its pipelines."""

    base: Spec
    root: Path
    storage: str

    @classmethod
    def for_spec(cls, base: Spec, storage: str | None = None) -> "ScarcePlan":
        if base.generator.checkpoints:
            raise GafiError("the scarce comparison trains a generator on each real subset: generator.checkpoints must be empty")
        root = base.run_path.parent / f"{base.run_path.name}-scarce"
        return cls(base, root, storage or base.storage or f"sqlite:///{root / 'gafi.db'}")

    def spec(self, fraction: float, mode: str, seeds: int, factors: dict[str, float] | None = None) -> Spec:
        """The study of one (fraction, mode) pipeline; `factors` (from step_factors) scale its epochs."""
        if mode not in MODES:
            raise GafiError(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
        base = self.base
        overrides = [
            f"name={_toml(f'{base.name}-f{fraction:g}-{mode}')}",
            f"run_dir={_toml(str(self.root / f'f{fraction:g}'))}",  # shared by both modes: one filter, one generator
            f"storage={_toml(self.storage)}",
            f"objective={_toml(mode)}",
            f"data.real_fraction={fraction!r}",
            f"final.seeds={seeds}",
        ]
        if factors and any(value != 1 for value in factors.values()):
            gen, cas = factors["generator"], factors["cas"]
            overrides += [
                f"generator.epochs={_scaled(base.generator.epochs, gen)}",
                f"checkpoint.values={_toml([_scaled(v, gen) for v in base.checkpoint.values])}",
                f"filter.epochs={_scaled(base.filter.epochs, factors['filter'])}",
                f"cas.epochs={_scaled(base.cas.epochs, cas)}",
            ]
            # An explicit warm-up is in epochs: scale it. The default (0) follows cas's lr milestones, which scale themselves.
            overrides += [
                f"{stage}.pruner_warmup={_scaled(base.stage(stage).pruner_warmup, cas)}"
                for stage in STAGE_NAMES + DIFFUSION_STAGE_NAMES
                if base.stage(stage).pruner_warmup
            ]
        return base.with_overrides(overrides)


def run_scarce(
    base: Spec,
    fractions: list[float],
    seeds: int,
    budget: str = "steps",
    storage: str | None = None,
    device: torch.device | None = None,
    progress: bool = False,
    reporter_factory=None,
    log=None,
) -> list[dict]:
    """Run (or resume) every (fraction, mode) pipeline; one result row per fraction."""
    if seeds < 1:
        raise GafiError(f"--seeds must be >= 1, got {seeds}")
    if not fractions:
        raise GafiError("--fractions must list at least one real fraction")
    if budget not in BUDGETS:
        raise GafiError(f"unknown budget {budget!r} (known: {', '.join(BUDGETS)})")
    plan = ScarcePlan.for_spec(base, storage)
    factors = {f: None for f in fractions}
    if budget == "steps":
        n_full, sizes = train_sizes(base, fractions)
        factors = {f: step_factors(base, n_full, sizes[f]) for f in fractions}
    specs = {(f, m): plan.spec(f, m, seeds, factors[f]) for f in fractions for m in MODES}  # validate all before training
    device = device or torch.device("cpu")
    opened = open_storage(plan.storage)
    pipelines: dict[tuple[float, str], Pipeline] = {}
    for (fraction, mode), spec in specs.items():
        if log:
            log(f"[scarce] real fraction {fraction:g}, {mode}: pipeline {spec.name} in {spec.run_path}")
        reporter = reporter_factory() if reporter_factory else None
        pipelines[fraction, mode] = run_pipeline(spec, opened, device, progress=progress, reporter=reporter)
        if reporter is not None and hasattr(reporter, "close"):
            reporter.close()
    return [scarce_row(fraction, {mode: pipelines[fraction, mode] for mode in MODES}) for fraction in fractions]


def scarce_row(fraction: float, by_mode: dict) -> dict:
    """One fraction: the three test accuracies (mean and sample stdev over seeds) and their sources."""
    rows = {mode: summary_row(pipeline) for mode, pipeline in by_mode.items()}
    synthetic, augment = by_mode["synthetic-only"], by_mode["augment"]
    real_only = synthetic.real_only_summary()
    row = {
        "real_fraction": fraction,
        "real_train_images": real_only.get("train_images"),
        "seeds": real_only.get("seeds"),
        "real_only_test": real_only.get("test"),
        "real_only_test_std": real_only.get("test_std"),
        "augment_test": rows["augment"]["cas_test"],
        "augment_test_std": rows["augment"]["cas_test_std"],
        "augment_ratio": augment.spec.augment_ratio,
        "synthetic_only_test": rows["synthetic-only"]["cas_test"],
        "synthetic_only_test_std": rows["synthetic-only"]["cas_test_std"],
        "real_filter_test": rows["synthetic-only"]["real_test"],
        "cas_epochs": synthetic.spec.cas.epochs,
        "generator_epochs": synthetic.spec.generator.epochs,
        "pipelines": rows,
    }
    if None not in (row["augment_test"], row["real_only_test"]):
        row["augment_gain"] = row["augment_test"] - row["real_only_test"]
    else:
        row["augment_gain"] = None
    return row


def _pm(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}%" + (f" ± {100 * std:.2f}" if std is not None else "")


def scarce_table(rows: list[dict]) -> str:
    """The comparison as a markdown table (test accuracy, mean ± sample stdev over seeds)."""
    headers = [
        "real fraction",
        "real train images",
        "CAS epochs",
        "real-only",
        "augment: real + synthetic (GaFi-tuned)",
        "synthetic-only CAS (GaFi-tuned)",
        "augment − real-only",
        "real, filter recipe (1 seed)",
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        gain = "-" if row["augment_gain"] is None else f"{100 * row['augment_gain']:+.2f} pp"
        cells = [
            f"{row['real_fraction']:g}",
            str(row["real_train_images"]),
            str(row["cas_epochs"]),
            _pm(row["real_only_test"], row["real_only_test_std"]),
            _pm(row["augment_test"], row["augment_test_std"]) + f" (ratio {row['augment_ratio']:g})",
            _pm(row["synthetic_only_test"], row["synthetic_only_test_std"]),
            gain,
            _pm(row["real_filter_test"], None),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = {row["seeds"] for row in rows}
    lines.append("")
    lines.append(f"Test accuracy on real data, mean ± sample stdev over {', '.join(str(s) for s in sorted(seeds, key=str))} seed(s).")
    return "\n".join(lines)
