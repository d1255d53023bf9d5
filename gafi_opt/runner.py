"""Running a pipeline on this machine: prepare the models it needs, then work through the stages."""

from __future__ import annotations

import torch

from gafi_opt.checkpoints import load_generator, require_checkpoints
from gafi_opt.data import RealData, load_data
from gafi_opt.models.factory import check_generator
from gafi_opt.pipeline import Pipeline
from gafi_opt.real_only import ensure_real_only
from gafi_opt.spec import Spec
from gafi_opt.train.gan import train_generator
from gafi_opt.train.real import train_real_classifier
from gafi_opt.worker import Worker


def prepare(pipeline: Pipeline, device: torch.device, progress: bool = True, data: RealData | None = None) -> RealData:
    """Train what is missing (filter classifier, real-only baseline, generator) and check the checkpoints fit the spec."""
    spec = pipeline.spec
    data = data or load_data(spec.data)
    if spec.generator.checkpoints:
        check_checkpoints(spec, data, device)  # bring your own: a misfit fails before anything is trained
    real = train_real_classifier(spec, data, device, progress)
    pipeline.set_attr("real_val", real.val_acc)
    pipeline.set_attr("real_test", real.test_acc)
    pipeline.set_attr("dataset", data.name)
    ensure_real_only(pipeline, data, device, progress)  # the CAS recipe on real data alone, per final seed
    if not spec.generator.checkpoints:
        train_generator(spec, data, device, seed=spec.seed, progress=progress)
        check_checkpoints(spec, data, device)
    return data


def check_checkpoints(spec: Spec, data: RealData, device: torch.device | str = "cpu") -> None:
    """Every checkpoint the search needs exists, and the last one loads into the spec's generator
    and, on the training device, makes images of the data's classes and shape in [-1, 1]."""
    paths = require_checkpoints(spec, spec.checkpoint.values)
    generator = load_generator(spec, paths[max(paths)], data.image_shape, data.num_classes, device)
    check_generator(generator, data.image_shape, data.num_classes, device)


def run_pipeline(spec: Spec, storage_url: str | None, device: torch.device, progress: bool = True, reporter=None) -> Pipeline:
    pipeline = Pipeline.create_or_load(spec, storage_url)
    prepare(pipeline, device, progress)
    Worker(pipeline, device, progress=progress, reporter=reporter).run()
    return pipeline
