"""Multi-generator sampling: one CAS classifier trained on a set drawn from K finished pipelines.

Each member pipeline contributes its generator at its own best checkpoint, with its own
best stddev and threshold and its own filter classifier, and an equal share of every
class (per class: the spec's synthetic count split K ways, the remainder going to the
first members); the combined set is renewed every epoch. The run is an Optuna study
`multigen/<A+B+...>` (member names sorted) in the pipelines' storage, with one enqueued
trial per seed, so it resumes where it stopped, can be extended with more seeds, and
shows in optuna-dashboard. The member pipelines must share their data and their CAS
classifier recipe; the recipe and the synthetic count come from the first member.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics

import optuna
import torch
from optuna.trial import TrialState

from gafi_opt.augment import to_float
from gafi_opt.cas import TrialContext, train_cas
from gafi_opt.checkpoints import load_generator, require_checkpoints
from gafi_opt.data import RealData, load_data
from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline
from gafi_opt.spec import Spec
from gafi_opt.stages import TrialConfig
from gafi_opt.storage import open_storage, redact
from gafi_opt.run_data import bind_run_data
from gafi_opt.synth import SynthesisStats, SyntheticSource, prepare_filter, prepare_generator
from gafi_opt.train.real import load_filter

log = logging.getLogger(__name__)
PREFIX = "multigen/"
ATTR = "gafi_multigen"  # the study's user attr holding its members
SEED_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Member:
    """A finished pipeline's generator as multigen uses it: its best checkpoint, stddev and threshold."""

    pipeline: str
    checkpoint: int
    stddev: float
    threshold: float

    def describe(self) -> str:
        return f"{self.pipeline}: checkpoint {self.checkpoint}, stddev {self.stddev:g}, threshold {self.threshold:g}"


class MultiSource:
    """Several SyntheticSources as one class-balanced set: images and labels concatenated."""

    def __init__(self, sources: list[SyntheticSource]):
        if not sources:
            raise ValueError("MultiSource needs at least one source")
        self.sources = sources
        self.num_classes = sources[0].num_classes
        self.labels = torch.cat([s.labels for s in sources])
        self._images: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.labels.numel()

    @property
    def images(self) -> torch.Tensor | None:
        if self._images is None and all(s.images is not None for s in self.sources):
            self._images = torch.cat([s.images for s in self.sources])
        return self._images

    @property
    def stats(self) -> SynthesisStats:
        parts = [s.stats for s in self.sources]
        return SynthesisStats(*(sum(getattr(p, key) for p in parts) for key in ("generated", "accepted", "fallback")))

    def fill(self, progress: bool = False) -> None:
        for source in self.sources:
            source.fill(progress=progress)
        self._images = None

    def recycle(self, fraction: float = 1.0) -> None:
        for source in self.sources:
            source.recycle(fraction)
        self._images = None


def study_name(names: list[str]) -> str:
    return PREFIX + "+".join(sorted(names))


def load_members(storage_url: str, names: list[str]) -> tuple[list[Pipeline], list[Member]]:
    """The member pipelines (sorted by name) and what each contributes. Raises GafiError."""
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise GafiError("--pipelines needs at least one pipeline name")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GafiError(f"pipeline {duplicates[0]!r} is listed more than once")
    pipelines = [Pipeline.load(storage_url, name) for name in sorted(names)]
    _check_compatible([p.spec for p in pipelines])
    members = []
    for pipeline in pipelines:
        if not pipeline.stage_complete("threshold"):
            stage = pipeline.current_stage()
            raise GafiError(f"pipeline {pipeline.name!r} has not finished its threshold stage (it is at stage {stage}); run it first")
        members.append(
            Member(
                pipeline.name,
                int(pipeline.best_value("checkpoint")),
                float(pipeline.best_value("stddev")),
                float(pipeline.best_value("threshold")),
            )
        )
    return pipelines, members


def _check_compatible(specs: list[Spec]) -> None:
    first = specs[0]
    for other in specs[1:]:
        for part in ("data", "cas"):
            a, b = getattr(first, part), getattr(other, part)
            if a != b:
                key = next(f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name))
                raise GafiError(
                    f"pipelines {first.name!r} and {other.name!r} differ in {part}.{key} "
                    f"({getattr(a, key)!r} vs {getattr(b, key)!r}): multigen needs the same data and CAS recipe"
                )
        if first.objective != other.objective:
            raise GafiError(f"pipelines {first.name!r} and {other.name!r} differ in objective ({first.objective} vs {other.objective})")


def shares(per_class: int, k: int) -> list[int]:
    """Images per class from each of k generators: equal, the remainder to the first ones."""
    if per_class < k:
        raise GafiError(f"{k} generators need at least {k} synthetic images per class, the spec gives {per_class}")
    return [per_class // k + (1 if i < per_class % k else 0) for i in range(k)]


def open_study(storage_url: str, members: list[Member], seeds: list[int]) -> optuna.Study:
    """The multigen study of these members, created once; seeds not yet in it are enqueued."""
    storage = open_storage(storage_url)
    name = study_name([m.pipeline for m in members])
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True, pruner=optuna.pruners.NopPruner()
    )
    stored = study.user_attrs.get(ATTR)
    wanted = [dataclasses.asdict(m) for m in members]
    if stored is None:
        study.set_user_attr(ATTR, wanted)
        study.set_user_attr("generators", len(members))
        _publish_note(study, members)
    elif stored != wanted:
        raise GafiError(
            f"{name} in {redact(storage_url)} was run with other member settings ({_listing(stored)}); "
            f"the pipelines' best values are now {_listing(wanted)}"
        )
    present = {t.params.get("seed") for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
    for seed in seeds:
        if seed not in present:
            study.enqueue_trial({"seed": seed})
    return study


def _listing(members: list[dict]) -> str:
    return "; ".join(f"{m['pipeline']} {m['checkpoint']}/{m['stddev']:g}/{m['threshold']:g}" for m in members)


def _publish_note(study: optuna.Study, members: list[Member]) -> None:
    """A note for optuna-dashboard saying what the study trains on (never fails the run)."""
    try:
        import optuna_dashboard

        lines = [f"### {study.study_name}", "", f"One CAS classifier per seed on a set drawn from {len(members)} generator(s), renewed every epoch:", ""]
        lines += ["| pipeline | checkpoint | stddev | threshold |", "|---|---|---|---|"]
        lines += [f"| {m.pipeline} | {m.checkpoint} | {m.stddev:g} | {m.threshold:g} |" for m in members]
        optuna_dashboard.save_note(study, "\n".join(lines))
    except Exception as exc:  # the dashboard note is a courtesy
        log.warning("could not write the dashboard note of %s: %s", study.study_name, exc)


class MultiGenRun:
    """What the trials of one multigen run share: data on the device, every member's generator and filter."""

    def __init__(self, pipelines: list[Pipeline], members: list[Member], device: torch.device, data: RealData | None = None):
        self.members = members
        self.device = device
        spec = pipelines[0].spec
        data = data or load_data(spec.data)
        self.context = TrialContext(spec, data, device)
        self.shares = shares(self.context.per_class, len(members))
        self.generators, self.filters = [], []
        probe = to_float(self.context.val[0][:8])
        for pipeline, member in zip(pipelines, members):
            bind_run_data(pipeline.spec, data)  # each member's models were trained on this same real train set
            path = require_checkpoints(pipeline.spec, [member.checkpoint])[member.checkpoint]
            generator = load_generator(pipeline.spec, path, data.image_shape, data.num_classes, device)
            precision = pipeline.spec.precision  # as the pipeline's trials run them
            self.generators.append(prepare_generator(generator, device, data.num_classes, precision))
            self.filters.append(prepare_filter(load_filter(pipeline.spec, data.image_shape, data.num_classes, device), device, probe, precision))

    def source(self, seed: int) -> MultiSource:
        synth = self.context.spec.synth
        return MultiSource(
            [
                SyntheticSource(
                    generator,
                    self.context.data.num_classes,
                    share,
                    stddev=member.stddev,
                    threshold=member.threshold,
                    filter_model=filter_model,
                    max_attempts=synth.max_attempts,
                    batch_size=synth.batch_size,
                    device=self.device,
                    seed=seed * 1009 + index,  # a different stream per generator
                )
                for index, (generator, filter_model, member, share) in enumerate(zip(self.generators, self.filters, self.members, self.shares))
            ]
        )

    def run_trial(self, study: optuna.Study, trial: optuna.Trial, progress: bool = False) -> None:
        seed = trial.suggest_int("seed", 0, SEED_MAX)  # the enqueued grid point
        config = TrialConfig("multigen", 0, 1.0, None, 1, seed)  # train_cas uses only the seed and the every-epoch renewal
        trial.set_user_attr("config", f"multigen of {len(self.members)}: " + "; ".join(m.describe() for m in self.members) + f"; seed {seed}")
        try:
            result = train_cas(self.context, config, trial, progress=progress, source=self.source(seed))
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        for key, value in result.user_attrs().items():
            trial.set_user_attr(key, value)
        if math.isnan(result.val_acc):
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, result.val_acc)


def run_multigen(
    storage_url: str, names: list[str], seeds: int | None = None, device: torch.device | None = None, progress: bool = False
) -> optuna.Study:
    """Train the multigen classifier for every seed not yet done (default: the final stage's seeds); returns the study."""
    pipelines, members = load_members(storage_url, names)
    spec = pipelines[0].spec
    count = spec.final.seeds if seeds is None else seeds
    if count < 1:
        raise GafiError(f"--seeds must be >= 1, got {count}")
    study = open_study(storage_url, members, [spec.seed + i for i in range(count)])
    if device is None:
        from gafi_opt.worker import resolve_device

        device = resolve_device(spec.device)
    run: MultiGenRun | None = None  # loaded only when there is a trial to run
    while any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        run = run or MultiGenRun(pipelines, members, device)
        run.run_trial(study, study.ask(), progress)
    return study


# ---------------------------------------------------------------- export


def multigen_studies(storage_url: str) -> list[optuna.study.StudySummary]:
    storage = open_storage(storage_url)
    return [s for s in optuna.get_all_study_summaries(storage, include_best_trial=False) if ATTR in s.user_attrs]


def summary_rows(storage_url: str, names: list[str] | None = None) -> list[dict]:
    """One export row per multigen study (only those whose members are all in `names`, when given), by K then name.

    checkpoint, stddev and threshold are per member (in `members`); CAS is the mean over the
    seeds; real_test is the mean of the members' real baselines. The paper's table has K = 1, 2, 4, 6.
    """
    from gafi_opt.report import EXPORT_KEYS

    rows = []
    for summary in multigen_studies(storage_url):
        members = summary.user_attrs[ATTR]
        member_names = [m["pipeline"] for m in members]
        if names and not set(member_names) <= set(names):
            continue
        pipelines = [Pipeline.load(storage_url, name) for name in member_names]
        study = optuna.load_study(study_name=summary.study_name, storage=open_storage(storage_url))
        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        row = {key: None for key in EXPORT_KEYS}
        attrs = [p.attrs() for p in pipelines]
        row.update(
            pipeline=summary.study_name,
            dataset=attrs[0].get("dataset", pipelines[0].spec.data.source),
            selection="test" if any(p.spec.selection == "test" for p in pipelines) else "val",
            generators=len(members),
            members=members,
        )
        spec = pipelines[0].spec  # members share data and objective
        row.update(mode=spec.objective, real_fraction=spec.data.real_fraction, augment_ratio=spec.augment_ratio if spec.objective == "augment" else None)
        if complete:
            tests = [t.user_attrs["test_acc"] for t in complete]
            row.update(
                cas_val=statistics.fmean(t.user_attrs["val_acc"] for t in complete),
                cas_test=statistics.fmean(tests),
                cas_test_std=statistics.stdev(tests) if len(tests) > 1 else 0.0,
                seeds=len(complete),
            )
        reals = [a.get("real_test") for a in attrs]
        if None not in reals:
            row["real_test"] = statistics.fmean(reals)
            if row["cas_test"] is not None and spec.objective != "augment":
                row["remaining_gap"] = row["real_test"] - row["cas_test"]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["generators"], r["pipeline"]))
