"""The ablation of a finished pipeline: one CAS classifier per (variant, seed) that is not trained yet.

The plan (gafi_opt.pipeline.ablation) lists the slots; the one worker loop runs them with the one CAS
trial body, so a run that stops resumes where it stopped, several processes can share it, and a slot
whose recipe repeats a finished trial takes that result instead of training.
"""

from __future__ import annotations

import torch

from gafi_opt.cas import CasObjective, TrialContext
from gafi_opt.data import load_data
from gafi_opt.models.device import resolve_device
from gafi_opt.pipeline import Pipeline, StageLoop, TrialHooks, WorkerOptions, WorkerStats
from gafi_opt.pipeline.ablation import AblationPlan
from gafi_opt.storages import open_storage


def run_ablation(
    storage,
    name: str,
    device: torch.device | None = None,
    progress: bool = False,
    options: WorkerOptions | None = None,
    hooks: TrialHooks | None = None,
) -> tuple[AblationPlan, WorkerStats]:
    """Train every missing slot of pipeline `name`'s ablation (the pipeline must be complete)."""
    storage = open_storage(storage, must_exist=True)
    pipeline = Pipeline.load(storage, name)
    plan = AblationPlan(pipeline)
    device = device or resolve_device(pipeline.spec.device)
    context = lambda: TrialContext(pipeline.spec, load_data(pipeline.spec.data), device)  # loaded on the first trial that trains
    return plan, StageLoop(plan, CasObjective(plan, context, hooks, progress), options, hooks).run()
