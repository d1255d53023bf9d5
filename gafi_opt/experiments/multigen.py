"""Multi-generator sampling: one CAS classifier per seed, trained on a set drawn from K finished pipelines.

Each member pipeline contributes its generator at its own best checkpoint, with its own best stddev
and threshold and its own filter classifier, and an equal share of every class; the combined set
(gafi_opt.result.multigen's MultiGenRun, which `gafi-opt sample` draws too) is renewed every epoch.
The study and its slots live in the pipelines' storage (gafi_opt.pipeline.multigen); its trials run
in the one worker loop with the one CAS trial body, so an interrupted run resumes where it stopped
and can be extended with more seeds. The member pipelines must share their data and CAS recipe; the
recipe and the synthetic count come from the first member.
"""

from __future__ import annotations

import torch

from gafi_opt.cas import CasObjective
from gafi_opt.models.device import resolve_device
from gafi_opt.pipeline import StageLoop, TrialHooks, WorkerOptions, WorkerStats
from gafi_opt.pipeline.multigen import MultigenPlan, load_members
from gafi_opt.result.multigen import MultiGenRun, shares
from gafi_opt.storages import open_storage

__all__ = ["MultiGenRun", "run_multigen", "shares"]


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
