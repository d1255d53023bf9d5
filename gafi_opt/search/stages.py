"""The stages as data: what each one searches, what it takes from the stages before, how it samples and prunes.

baseline   the synthetic baseline: last checkpoint, stddev 1, no filter, one fixed set (per seed)
checkpoint which generator epoch (filter at threshold 0, set renewed every N=10 epochs)
stddev     the Expansion Trick's latent stddev, on the best checkpoint
threshold  Dynamic Sample Filtering's confidence threshold, on the best checkpoint and stddev
final      the best of everything, set renewed every epoch (N=1), repeated over seeds

A diffusion generator (generator.arch = "diffusion") has three more knobs, each a stage between
checkpoint and stddev, run like the checkpoint stage (stddev 1, filter at 0) on the best of the
stages before: `sampler` (only when sampler.values lists samplers), `guidance` (classifier-free
guidance scale) and `steps` (sampling steps). Until its own stage, a knob takes the spec's
generator.diffusion value, so each stage's default point repeats the stage before's best and is reused.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from gafi_opt.spec import Spec, StageSpec

STAGES = ("baseline", "checkpoint", "stddev", "threshold", "final")
SEARCH_SEED_STRIDE = 1000  # every rule but argmax: search stage k trains with seed spec.seed + 1000 * (k + 1), apart from the final seeds
SEARCH_STAGES = ("checkpoint", "stddev", "threshold")  # in order: each fixes its best value for the next
KNOB_STAGES = ("sampler", "guidance", "steps")  # a diffusion generator's sampling knobs, searched in this order
SEARCHED = {
    "baseline": "seed", "checkpoint": "checkpoint", "stddev": "stddev", "threshold": "threshold", "final": "seed",
    "sampler": "sampler", "guidance": "guidance", "steps": "steps",
}  # fmt: skip
NO_FILTER = None


def search_stages(spec: Spec) -> tuple[str, ...]:
    """The searched stages of the spec's pipeline, in order (a GAN's: SEARCH_STAGES)."""
    if not spec.is_diffusion:
        return SEARCH_STAGES
    knobs = tuple(stage for stage in KNOB_STAGES if stage != "sampler" or spec.sampler.values)
    return ("checkpoint", *knobs, "stddev", "threshold")


def pipeline_stages(spec: Spec) -> tuple[str, ...]:
    """Every stage of the spec's pipeline, in the order they run (a GAN's: STAGES)."""
    return ("baseline", *search_stages(spec), "final")


@dataclass(frozen=True)
class TrialConfig:
    """Everything that decides one CAS trial's synthetic data."""

    stage: str
    checkpoint: int
    stddev: float
    threshold: float | None  # None: no filtering at all
    recycle_every: int  # 0: the set is generated once and kept
    seed: int
    # A diffusion generator's sampling knobs; None for a GAN.
    guidance: float | None = None
    steps: int | None = None
    sampler: str | None = None

    def describe(self) -> str:
        threshold = "off" if self.threshold is None else f"{self.threshold:g}"
        recycle = "never" if not self.recycle_every else f"every {self.recycle_every} epoch(s)"
        knobs = "" if self.sampler is None else f"sampler {self.sampler}, guidance {self.guidance:g}, steps {self.steps}, "
        return (
            f"stage {self.stage}: checkpoint {self.checkpoint}, {knobs}stddev {self.stddev:g}, "
            f"filter threshold {threshold}, set renewed {recycle}, seed {self.seed}"
        )


def stage_spec(spec: Spec, stage: str) -> StageSpec:
    """The baseline stage shares the final stage's seeds and runs no pruner."""
    if stage == "baseline":
        return StageSpec(search="grid", values=(), recycle_every=0, pruner="none", seeds=spec.final.seeds)
    return spec.stage(stage)


def grid(spec: Spec, stage: str) -> list:
    """The values of the stage's searched parameter that an exhaustive stage evaluates."""
    if stage in ("baseline", "final"):
        return [spec.seed + i for i in range(spec.final.seeds)]
    values = spec.stage(stage).values
    if stage == "sampler":
        return [str(v) for v in values]
    return [int(v) for v in values] if stage in ("checkpoint", "steps") else [float(v) for v in values]


def is_grid(spec: Spec, stage: str) -> bool:
    return stage in ("baseline", "final") or spec.stage(stage).search == "grid"


def trial_budget(spec: Spec, stage: str) -> int:
    """Finished trials that complete the stage."""
    points = len(grid(spec, stage))
    if is_grid(spec, stage):
        return points
    return spec.stage(stage).n_trials or max(1, points // 4)


def budgeted_start(spec: Spec, stage: str):
    """The point a budgeted stage evaluates first, or None to let its sampler choose them all.

    The checkpoint stage starts at the last checkpoint: the synthetic baseline's, and the
    choice a user makes without a search, so the search's result is what beats it. (On the
    digits preset the samplers' random first draws otherwise fall on early checkpoints, whose
    CAS is 5-25 points lower, and successive halving lets the first trial set the bar.)
    """
    return max(grid(spec, stage)) if stage == "checkpoint" else None


def suggest(trial: optuna.Trial, spec: Spec, stage: str):
    """The searched parameter, through Optuna's API (grid points arrive as enqueued values)."""
    name = SEARCHED[stage]
    values = grid(spec, stage)
    if is_grid(spec, stage):
        return trial.suggest_categorical(name, values)
    step = _common_step(values)
    if step is None or len(values) < 2:  # an irregular grid: only its own points exist (e.g. checkpoints)
        return trial.suggest_categorical(name, values)
    if stage in ("checkpoint", "steps"):
        return trial.suggest_int(name, min(values), max(values), step=int(step))
    return round(trial.suggest_float(name, min(values), max(values), step=step), 9)  # 1.7, not 1.7000000000000002


def trial_config(stage: str, value, fixed: dict, spec: Spec) -> TrialConfig:
    """The trial's data recipe: its searched value plus what earlier stages fixed."""
    recycle = stage_spec(spec, stage).recycle_every
    knobs = _knobs(spec, stage, value, fixed)
    if stage == "baseline":
        return TrialConfig(stage, fixed["last_checkpoint"], 1.0, NO_FILTER, 0, int(value), **knobs)
    seed = search_seed(spec, stage) if stage in search_stages(spec) else int(value)
    if stage == "checkpoint":
        return TrialConfig(stage, int(value), 1.0, 0.0, recycle, seed, **knobs)
    if stage in KNOB_STAGES:
        return TrialConfig(stage, fixed["checkpoint"], 1.0, 0.0, recycle, seed, **knobs)
    if stage == "stddev":
        return TrialConfig(stage, fixed["checkpoint"], float(value), 0.0, recycle, seed, **knobs)
    if stage == "threshold":
        return TrialConfig(stage, fixed["checkpoint"], fixed["stddev"], float(value), recycle, seed, **knobs)
    return TrialConfig(stage, fixed["checkpoint"], fixed["stddev"], fixed["threshold"], recycle, seed, **knobs)


def _knobs(spec: Spec, stage: str, value, fixed: dict) -> dict:
    """A diffusion trial's sampler, guidance and steps: its own stage's value, else the best of a stage
    that runs before it, else the spec's generator.diffusion default; {} for a GAN.

    Only stages before `stage` count, so a later stage's `fixed` rebuilds an earlier stage's recipes
    exactly (as reuse does to find a repeated recipe)."""
    if not spec.is_diffusion:
        return {}
    order = search_stages(spec)
    if stage == "final":
        before = order
    elif stage in order:
        before = order[: order.index(stage)]
    else:  # the baseline: the spec's defaults
        before = ()
    default = spec.generator.diffusion
    knobs = {name: fixed[name] if name in before and name in fixed else getattr(default, name) for name in KNOB_STAGES}
    if stage in KNOB_STAGES:
        knobs[stage] = value
    return {"sampler": str(knobs["sampler"]), "guidance": float(knobs["guidance"]), "steps": int(knobs["steps"])}


def search_seed(spec: Spec, stage: str) -> int:
    """The seed every trial of a search stage trains with (common random numbers within the stage).

    argmax (the paper): the spec's seed in every stage, so the previous stage's winner recurs as a point
    of the next stage and is reused with its (lucky) score. Every other rule: a seed of the stage's own,
    so that point is trained afresh and competes on equal terms.
    """
    if spec.stage(stage).rule == "argmax":
        return spec.seed
    return spec.seed + SEARCH_SEED_STRIDE * (search_stages(spec).index(stage) + 1)


def spread_order(n: int) -> list[int]:
    """Grid indices in the order that spreads the first trials over the whole range: the last point, the
    first, the middle, then the middles of the halves, and so on.

    A median pruner compares each trial with the trials before it. In grid order a rising curve (later
    checkpoints, stronger filters) puts every trial above the median of the ones before, so nothing is
    ever pruned; spread out, the first trials sample the whole curve and the pruner cuts the lower half.
    """
    if n <= 2:
        return list(range(n))[::-1]
    order, intervals = [n - 1, 0], [(0, n - 1)]
    while intervals:
        low, high = intervals.pop(0)
        middle = (low + high) // 2
        if low < middle < high:
            order.append(middle)
            intervals += [(low, middle), (middle, high)]
    return order + [i for i in range(n) if i not in order]


def _common_step(values: list) -> float | None:
    ordered = sorted(values)
    steps = {round(b - a, 9) for a, b in zip(ordered, ordered[1:])}
    return steps.pop() if len(steps) == 1 else None


def slot_params(spec: Spec, stage: str) -> list[dict]:
    """One entry per slot of the stage, in the order a worker takes them: a grid point's fixed value, or {}
    for each trial of a budgeted search (whose first slot may be fixed: budgeted_start)."""
    if stage in ("baseline", "final"):
        return [{SEARCHED[stage]: value} for value in grid(spec, stage)]
    if is_grid(spec, stage):
        values = grid(spec, stage)
        return [{SEARCHED[stage]: values[i]} for i in spread_order(len(values))]
    slots = [{} for _ in range(trial_budget(spec, stage))]
    start = budgeted_start(spec, stage)
    if start is not None:
        slots[0] = {SEARCHED[stage]: start}
    return slots
