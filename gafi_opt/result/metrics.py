"""Distribution metrics between two image sets, in the feature space of a classifier: no downloaded weights.

- Fréchet distance (FD): the Fréchet distance between Gaussians fitted to the two sets' features,
  computed by torchmetrics' FrechetInceptionDistance with the classifier in place of Inception.
- Precision and recall of Kynkäänniemi et al. (NeurIPS 2019): each set's manifold is the union of
  balls around its samples, of radius the distance to the k-th nearest neighbour in the same set;
  precision is the share of synthetic samples inside the real manifold (fidelity), recall the share
  of real samples inside the synthetic one (coverage).

The features are the classifier's penultimate layer (the input of its last linear layer, `head`).
FD's scale is that of those features, so FD values compare sets measured with the same classifier only.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from gafi_opt.data import to_float
from gafi_opt.errors import GafiError

NEIGHBOURS = 3  # k of the k-NN manifolds: the paper's choice
BATCH = 1024  # images per feature pass, and rows per distance block


class PenultimateFeatures(nn.Module):
    """A classifier without its last linear layer: uint8 (or [-1, 1] float) images -> fp32 features."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        head = getattr(classifier, "head", None)
        if not isinstance(head, nn.Linear):
            raise GafiError(f"{type(classifier).__name__} has no linear `head` layer to take the features before")
        self.body = copy.deepcopy(classifier).eval()
        self.body.head = nn.Identity()
        self.num_features = head.in_features  # torchmetrics reads it instead of probing with a 299x299 image

    def train(self, mode: bool = True) -> PenultimateFeatures:
        return super().train(False)  # BatchNorm must keep its running statistics, whatever a caller asks

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images) if images.dtype == torch.uint8 else images
        return self.body(x.float()).float()


def features(extractor: PenultimateFeatures, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([extractor(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])


def frechet_distance(extractor: PenultimateFeatures, real: torch.Tensor, fake: torch.Tensor) -> float:
    """FD between two image sets (at least 2 images each) in the extractor's feature space."""
    if len(real) < 2 or len(fake) < 2:
        raise GafiError(f"the Fréchet distance needs at least 2 images per set, got {len(real)} and {len(fake)}")
    # lazy: torchmetrics.image imports every image metric (torchvision's detection models, torch._dynamo), seconds
    # that `gafi-opt sample` and `load_best` should not pay
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=extractor, normalize=False).to(real.device)
    for images, is_real in ((real, True), (fake, False)):
        for start in range(0, len(images), BATCH):
            metric.update(images[start : start + BATCH], real=is_real)
    # The distance is a difference of traces: round-off can leave a tiny negative number for identical sets.
    return max(0.0, float(metric.compute()))


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = NEIGHBOURS) -> tuple[float, float]:
    """Kynkäänniemi et al.'s precision and recall of `fake` against `real` (feature matrices, one row per image).

    Written here: torchmetrics has no such metric, and torch-fidelity's works only through its own
    registered feature extractors and datasets, not on given features.
    """
    if min(len(real_features), len(fake_features)) <= k:
        raise GafiError(f"precision and recall with k = {k} need more than {k} images per set, got {len(real_features)} and {len(fake_features)}")
    real_radii = _kth_neighbour_distance(real_features, k)
    fake_radii = _kth_neighbour_distance(fake_features, k)
    precision = _inside(fake_features, real_features, real_radii).float().mean()
    recall = _inside(real_features, fake_features, fake_radii).float().mean()
    return float(precision), float(recall)


def _kth_neighbour_distance(points: torch.Tensor, k: int) -> torch.Tensor:
    """Per point, the distance to its k-th nearest other point of the same set (itself, at 0, is the first)."""
    return torch.cat([torch.cdist(points[i : i + BATCH], points).kthvalue(k + 1, dim=1).values for i in range(0, len(points), BATCH)])


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Per point, whether it lies in at least one ball (centre, radius)."""
    return torch.cat([(torch.cdist(points[i : i + BATCH], centres) <= radii[None]).any(1) for i in range(0, len(points), BATCH)])


def compare(extractor: PenultimateFeatures, real: torch.Tensor, fake: torch.Tensor, k: int = NEIGHBOURS) -> dict:
    """FD, precision and recall of the image set `fake` against `real` (uint8 images on one device)."""
    precision, recall = precision_recall(features(extractor, real), features(extractor, fake), k)
    return {"fd": frechet_distance(extractor, real, fake), "precision": precision, "recall": recall, "images": len(fake), "real_images": len(real)}
