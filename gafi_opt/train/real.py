"""The classifier trained on real data: the filter of Dynamic Sample Filtering and the real baseline.

Trained on real train with the `filter` recipe; the epoch with the best real-val accuracy
is kept (test accuracy is recorded beside it, never used to choose).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from gafi_opt.data import RealData
from gafi_opt.data.fingerprint import bind_run_data
from gafi_opt.errors import GafiError
from gafi_opt.models import build_classifier
from gafi_opt.models.checkpoints import atomic_save, read_weights
from gafi_opt.spec import Spec
from gafi_opt.train.classifier import ClassifierTrainer


@dataclass(frozen=True)
class RealClassifierResult:
    val_acc: float
    test_acc: float
    epoch: int


def filter_path(spec: Spec) -> Path:
    return spec.run_path / "filter.pt"


def train_real_classifier(spec: Spec, data: RealData, device: torch.device, progress: bool = True) -> RealClassifierResult:
    """Train the filter classifier unless its file already exists; returns its accuracies."""
    bind_run_data(spec, data)  # a cached filter.pt must come from this same real train set
    path = filter_path(spec)
    if path.exists():
        return load_real_result(spec)
    trainer = ClassifierTrainer(spec.filter, data.image_shape, data.num_classes, device, seed=spec.seed)
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    val_x, val_y = data.val_x.to(device), data.val_y.to(device)
    best_val, best_state, best_epoch = -1.0, None, 0
    bar = tqdm(range(1, spec.filter.epochs + 1), desc="filter classifier", unit="epoch", disable=not progress, dynamic_ncols=True)
    for epoch in bar:
        trainer.train_epoch(train_x, train_y)
        val_acc = trainer.evaluate(val_x, val_y)
        if val_acc > best_val:
            best_val, best_epoch = val_acc, epoch
            best_state = copy.deepcopy(trainer.model.state_dict())
        bar.set_postfix(val_acc=f"{val_acc:.4f}", best=f"{best_val:.4f}")
    trainer.model.load_state_dict(best_state)
    test_acc = trainer.evaluate(data.test_x.to(device), data.test_y.to(device))
    result = RealClassifierResult(val_acc=best_val, test_acc=test_acc, epoch=best_epoch)
    atomic_save({"state_dict": trainer.model.state_dict(), "val_acc": best_val, "test_acc": test_acc, "epoch": best_epoch}, path)
    return result


def _read(spec: Spec) -> dict:
    path = filter_path(spec)
    if not path.exists():
        raise GafiError(f"no filter classifier at {path}: run 'gafi-opt train-classifier' first")
    saved = read_weights(path, "filter classifier")
    try:
        saved["state_dict"], saved["val_acc"], saved["test_acc"]
    except (KeyError, TypeError, IndexError):
        raise GafiError(f"filter classifier {path} is not one gafi-opt wrote (it lacks state_dict, val_acc or test_acc)") from None
    return saved


def load_real_result(spec: Spec) -> RealClassifierResult:
    saved = _read(spec)
    return RealClassifierResult(float(saved["val_acc"]), float(saved["test_acc"]), int(saved["epoch"]))


def load_filter(spec: Spec, image_shape, num_classes: int, device) -> torch.nn.Module:
    model = build_classifier(spec.filter, image_shape, num_classes)
    try:
        model.load_state_dict(_read(spec)["state_dict"])
    except RuntimeError as exc:
        raise GafiError(f"filter classifier {filter_path(spec)} does not fit the spec: {' '.join(str(exc).split())[:200]}") from None
    return model.to(device).eval()
