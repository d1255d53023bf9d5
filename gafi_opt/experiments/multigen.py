"""Multi-generator sampling: one CAS classifier per seed, trained on a set drawn from K finished pipelines.

Each member pipeline contributes its generator at its own best checkpoint, with its own best stddev
and threshold and its own filter classifier, and an equal share of every class (per class: the spec's
synthetic count split K ways, the remainder going to the first members); the combined set is renewed
every epoch. The study and its slots live in the pipelines' storage (gafi_opt.pipeline.multigen); its
trials run in the one worker loop with the one CAS trial body, so an interrupted run resumes where it
stopped and can be extended with more seeds. The member pipelines must share their data and CAS
recipe; the recipe and the synthetic count come from the first member.
"""

from __future__ import annotations

import torch

from gafi_opt.cas import CasObjective, TrialContext
from gafi_opt.data import RealData, load_data, to_float
from gafi_opt.data.fingerprint import bind_run_data
from gafi_opt.errors import GafiError
from gafi_opt.models.checkpoints import load_generator, require_checkpoints
from gafi_opt.models.device import resolve_device
from gafi_opt.pipeline import Pipeline, StageLoop, TrialHooks, WorkerOptions, WorkerStats
from gafi_opt.pipeline.multigen import Member, MultigenPlan, load_members
from gafi_opt.storages import open_storage
from gafi_opt.synth import MultiSource, SyntheticSource, prepare_filter, prepare_generator
from gafi_opt.train.real import load_filter


def shares(per_class: int, k: int) -> list[int]:
    """Images per class from each of k generators: equal, the remainder to the first ones."""
    if per_class < k:
        raise GafiError(f"{k} generators need at least {k} synthetic images per class, the spec gives {per_class}")
    return [per_class // k + (1 if i < per_class % k else 0) for i in range(k)]


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


def run_multigen(
    storage,
    names: list[str],
    seeds: int | None = None,
    device: torch.device | None = None,
    progress: bool = False,
    options: WorkerOptions | None = None,
    hooks: TrialHooks | None = None,
) -> tuple[MultigenPlan, WorkerStats]:
    """Train the multigen classifier for every seed not yet done (default: the final stage's seeds).

    `storage`: the pipelines' storage (opened, or its URL).
    """
    storage = open_storage(storage, must_exist=True)
    pipelines, members = load_members(storage, names)
    spec = pipelines[0].spec
    plan = MultigenPlan(storage, pipelines, members, spec.final.seeds if seeds is None else seeds)
    device = device or resolve_device(spec.device)
    run: list[MultiGenRun] = []  # the models load on the first trial, not when every seed is done

    def loaded() -> MultiGenRun:
        if not run:
            run.append(MultiGenRun(pipelines, members, device))
        return run[0]

    objective = CasObjective(plan, lambda: loaded().context, hooks, progress, source=lambda _context, config: loaded().source(config.seed))
    return plan, StageLoop(plan, objective, options, hooks).run()
