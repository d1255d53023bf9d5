"""Quality metrics beside CAS: how close the synthetic sets of the synthetic baseline and of GaFi's choice
lie to real data, recorded in the pipeline's root study once the pipeline is complete.

Each recipe draws one synthetic set (seed: the spec's) and is compared with the real val split in the
filter classifier's feature space (gafi_opt.result.metrics: Fréchet distance, k-NN precision and recall).
The synthetic set matches val class by class (as many images of every class as val has), so class
balance does not count against either set and both sides have as many images. As a yardstick, the
same comparison is made for a real set of that shape taken from the train split: the distance real data
itself has to val with this many images. Stored under the root attr `quality`:
{"baseline": {...}, "final": {...}, "real": {...}, "features": ..., "k": ...}, each part with fd,
precision, recall, images and real_images.
"""

from __future__ import annotations

import torch

from gafi_opt.cas import TrialContext
from gafi_opt.data import load_data
from gafi_opt.errors import GafiError
from gafi_opt.pipeline import Pipeline
from gafi_opt.pipeline.store import QUALITY_ATTR
from gafi_opt.report.dashboard import publish_root_note
from gafi_opt.result.metrics import NEIGHBOURS, PenultimateFeatures, compare
from gafi_opt.search.stages import trial_config
from gafi_opt.train.real import load_filter


def record_quality(pipeline: Pipeline, device: torch.device, force: bool = False) -> dict:
    """Measure and store the metrics of a complete pipeline, unless they are stored already (`force`: again)."""
    stored = pipeline.attrs().get(QUALITY_ATTR)
    if stored and not force:
        return stored
    current = pipeline.current_stage()
    if current is not None:
        raise GafiError(f"pipeline {pipeline.name!r} is not finished (it is at stage {current}): its final choice is not known yet")
    quality = measure_quality(pipeline, TrialContext(pipeline.spec, load_data(pipeline.spec.data), device))
    pipeline.set_attr(QUALITY_ATTR, quality)
    publish_root_note(pipeline)
    return quality


def measure_quality(pipeline: Pipeline, context: TrialContext) -> dict:
    spec, data = pipeline.spec, context.data
    extractor = PenultimateFeatures(load_filter(spec, data.image_shape, data.num_classes, context.device))
    real_x, real_y = context.val
    counts = torch.bincount(real_y, minlength=data.num_classes)
    quality = {"features": f"filter classifier's penultimate layer ({extractor.num_features} features)", "k": NEIGHBOURS, "seed": spec.seed}
    for part in ("baseline", "final"):
        study = pipeline.stage_study(part)
        config = trial_config(part, spec.seed, pipeline.layout(study, part)["fixed"], spec)
        source = context.source(config, per_class=int(counts.max()))
        source.fill()
        quality[part] = compare(extractor, real_x, _matching(source.images, source.labels, counts))
    quality["real"] = compare(extractor, real_x, _matching(*context.train, counts))
    return quality


def _matching(images: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The first counts[c] images of every class c (fewer where a class has fewer)."""
    keep = torch.cat([torch.nonzero(labels == c).flatten()[: int(n)] for c, n in enumerate(counts.tolist())])
    return images[keep]
