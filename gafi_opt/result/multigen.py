"""The set several finished pipelines' choices make together: multigen's mix of K generators.

Each member pipeline contributes its generator at its own best checkpoint, with its own best stddev
and threshold and its own filter classifier, and an equal share of every class (per class: the
synthetic count split K ways, the remainder going to the first members). Multigen's trials train on
it (gafi_opt.experiments.multigen) and `gafi-opt sample --pipeline multigen/A+B` writes it, so both
draw it through this one class.
"""

from __future__ import annotations

import torch

from gafi_opt.cas import TrialContext
from gafi_opt.data import RealData, load_data, to_float
from gafi_opt.data.fingerprint import bind_run_data
from gafi_opt.errors import GafiError
from gafi_opt.models.checkpoints import load_generator, require_checkpoints
from gafi_opt.pipeline import Pipeline
from gafi_opt.pipeline.multigen import Member
from gafi_opt.synth import MultiSource, SyntheticSource, prepare_filter, prepare_generator
from gafi_opt.train.real import load_filter


def shares(per_class: int, k: int) -> list[int]:
    """Images per class from each of k generators: equal, the remainder to the first ones."""
    if per_class < k:
        raise GafiError(f"{k} generators need at least {k} synthetic images per class, the spec gives {per_class}")
    return [per_class // k + (1 if i < per_class % k else 0) for i in range(k)]


class MultiGenRun:
    """What the draws of one multigen mix share: data on the device, every member's generator and filter."""

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

    def source(self, seed: int, per_class: int | None = None) -> MultiSource:
        """The mix for one seed: `per_class` images of every class in all (default: the first member's synthetic count)."""
        synth = self.context.spec.synth
        split = self.shares if per_class is None else shares(per_class, len(self.members))
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
                for index, (generator, filter_model, member, share) in enumerate(zip(self.generators, self.filters, self.members, split))
            ]
        )
