"""A pipeline in a storage and the one worker loop that runs its trials (and a multigen study's).

`Pipeline` is a pipeline's studies in an opened storage (spec, stages, slots, choices); `StageLoop` is
the worker loop (claim, ticket, heartbeat, run, finish or re-queue), which runs an objective such as
gafi_opt.cas.CasObjective; `Interrupted` is what SIGTERM or Ctrl-C become in it. Nothing here imports
torch, so commands that only read a storage start fast.
"""

from gafi_opt.pipeline.loop import StageLoop, TrialHooks, WorkerOptions, WorkerStats
from gafi_opt.pipeline.signals import Interrupted
from gafi_opt.pipeline.store import Pipeline, pipeline_names

__all__ = ["Interrupted", "Pipeline", "StageLoop", "TrialHooks", "WorkerOptions", "WorkerStats", "pipeline_names"]
