"""Classifier training on uint8 image tensors that already sit on the training device.

No DataLoader: each epoch draws an index permutation on the device, slices whole batches,
normalises and augments them there. Convolutional models run channels_last (on CPU too:
oneDNN's NHWC kernels are faster, and NCHW max-pooling on a CPU is very slow); autocast
follows `precision` (see gafi_opt.accel). The optimiser is SGD (Nesterov, fused where torch has
the kernel: CUDA and CPU) with *decoupled* weight decay, applied every step as
p <- p * (1 - weight_decay * lr_t / lr_0) (Loshchilov & Hutter's SGDW, where the decay
follows the learning-rate schedule). Evaluation runs in large batches on argmax of logits.

With a `ModelSlot` (spec `compile = true`), the model is the worker's one compiled module,
re-initialised for this trial: the same initial weights a fresh build with this seed gets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gafi_opt.data import to_float
from gafi_opt.data.augment import augment
from gafi_opt.models import build_classifier
from gafi_opt.models.accel import ModelSlot, autocast, autocast_dtype, is_convolutional, to_channels_last
from gafi_opt.spec import ClassifierSpec

AUGMENT_CHUNK_PIXELS = 2**23  # values per augmented chunk: 32 MiB of fp32, e.g. 2,688 CIFAR images


class ClassifierTrainer:
    def __init__(
        self,
        spec: ClassifierSpec,
        image_shape,
        num_classes: int,
        device: torch.device,
        seed: int,
        precision: str = "auto",
        slot: ModelSlot | None = None,
    ):
        torch.manual_seed(seed)
        self.spec = spec
        self.device = torch.device(device)
        self.dtype = autocast_dtype(self.device, precision)
        fresh = build_classifier(spec, image_shape, num_classes)
        if slot is None:
            self.model: nn.Module = to_channels_last(fresh.to(self.device))
            self.forward = self.model
        else:
            slot.load(fresh.state_dict())
            self.model, self.forward = slot.module, slot.forward
        self.channels_last = is_convolutional(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = _fastest_sgd(self.params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov and spec.momentum > 0)
        milestones = sorted({max(1, round(m * spec.epochs)) for m in spec.lr_milestones})
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=milestones, gamma=0.1)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        self.epoch = 0

    def _input(self, images_uint8: torch.Tensor) -> torch.Tensor:
        x = to_float(images_uint8)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_epoch(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """One pass over (images, labels) in shuffled batches; returns the mean loss."""
        self.model.train()
        spec = self.spec
        order = torch.randperm(images.shape[0], device=self.device, generator=self.gen)
        decay = 1.0 - spec.weight_decay * self.optimizer.param_groups[0]["lr"] / spec.lr
        total = torch.zeros((), device=self.device)
        for x, y in self._augmented_batches(images, labels, order):
            with autocast(self.device, self.dtype):
                loss = F.cross_entropy(self.forward(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if spec.weight_decay:
                with torch.no_grad():
                    torch._foreach_mul_(self.params, decay)
            total += loss.detach() * y.numel()
        self.scheduler.step()
        self.epoch += 1
        return float(total) / max(1, images.shape[0])

    def _augmented_batches(self, images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor):
        """Training batches in `order`, normalised and augmented a chunk of batches at a time.

        Augmentation draws per image, so a chunk of several batches gets the same distribution
        as batch by batch, in a tenth of the small tensor operations (they, not the arithmetic,
        dominate on small images).
        """
        batch = self.spec.batch_size
        chunk = batch * max(1, AUGMENT_CHUNK_PIXELS // (batch * images[0].numel()))
        for start in range(0, order.numel(), chunk):
            idx = order[start : start + chunk]
            x = augment(to_float(images[idx]), self.spec.augment, self.spec.crop_padding, self.spec.cutout_size, self.gen)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = labels[idx]
            for offset in range(0, idx.numel(), batch):
                yield x[offset : offset + batch], y[offset : offset + batch]

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 accuracy as a fraction, in large batches."""
        return self.scores(images, labels)[0]

    @torch.inference_mode()
    def scores(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """Top-1 accuracy and soft accuracy (the mean probability given to each image's true class), as
        fractions. The soft one counts every image by how sure the classifier is, so on a small split it
        moves in finer steps than the right-or-wrong count."""
        if images.shape[0] == 0:
            return 0.0, 0.0
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        true_probability = torch.zeros((), dtype=torch.float32, device=self.device)
        for start in range(0, images.shape[0], self.spec.eval_batch_size):
            x = self._input(images[start : start + self.spec.eval_batch_size])
            y = labels[start : start + self.spec.eval_batch_size]
            with autocast(self.device, self.dtype):
                logits = self.forward(x)
            correct += (logits.argmax(1) == y).sum()
            true_probability += logits.float().softmax(1).gather(1, y[:, None]).sum()
        count = images.shape[0]
        return float(correct.float() / count), float(true_probability / count)  # float32, as accuracy() computes it


@torch.inference_mode()
def predict_proba(model: nn.Module, images_uint8: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, images_uint8.shape[0], batch_size):
        x = to_float(images_uint8[start : start + batch_size])
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
            out.append(model(x).float().softmax(1))
    return torch.cat(out)


@torch.inference_mode()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    if images.shape[0] == 0:
        return torch.zeros(())
    predictions = predict_proba(model, images, batch_size).argmax(1)
    return (predictions == labels).float().mean()


def _fastest_sgd(params: list[nn.Parameter], **options) -> torch.optim.SGD:
    """SGD with the fused kernel (one kernel for every parameter's update; CUDA, and CPU since torch 2.4:
    fewer, larger operations per step than foreach), else the foreach path."""
    try:
        return torch.optim.SGD(params, fused=True, **options)
    except RuntimeError:  # a device without a fused SGD kernel
        return torch.optim.SGD(params, foreach=True, **options)
