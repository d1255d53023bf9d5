"""The real-only baseline: the CAS recipe trained on the real train subset alone.

The filter classifier's accuracy (`real_test`) uses the `filter` recipe, one seed and
best-val epoch selection. To show what synthetic data added, the comparison must differ
only in the data: this baseline trains the `cas` classifier for `cas.epochs` on the same
real subset (`data.real_fraction`), over the final stage's seeds, and reports the
last epoch's val and test accuracy exactly as CAS and augment trials do.

The pipeline keeps the results in its root user attrs (gafi_opt.pipeline.store: one key per
seed, so an interrupted run keeps the seeds it finished and concurrent writers never overwrite
each other), not as a stage: it needs no generator, no synthetic stream, no search and no
pruning, and it leaves every stage consumer (figures, dashboard notes, samplers) about synthetic data.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from gafi_opt.data import RealData
from gafi_opt.spec import Spec
from gafi_opt.train.classifier import ClassifierTrainer


def train_real_only(spec: Spec, data: RealData, device: torch.device, seed: int, progress: bool = False) -> dict:
    """One real-only classifier: `cas` recipe, `cas.epochs` epochs on real train; last-epoch accuracies."""
    started = time.perf_counter()
    trainer = ClassifierTrainer(spec.cas, data.image_shape, data.num_classes, device, seed=seed)
    train = (data.train_x.to(device), data.train_y.to(device))
    val = (data.val_x.to(device), data.val_y.to(device))
    history = []
    for _ in tqdm(range(spec.cas.epochs), desc=f"real-only seed {seed}", unit="epoch", leave=False, disable=not progress):
        trainer.train_epoch(*train)
        history.append(trainer.evaluate(*val))
    return {
        "seed": seed,
        "val_acc": history[-1],
        "test_acc": trainer.evaluate(data.test_x.to(device), data.test_y.to(device)),
        "classifier_epochs": len(history),
        "train_images": int(data.train_y.numel()),
        "seconds": round(time.perf_counter() - started, 3),
        "val_history": history,
    }
