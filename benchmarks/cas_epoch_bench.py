"""Benchmark 2: classifier training images per second, ClassifierTrainer vs a plain DataLoader loop.

Same model (architecture and initial weights), same optimiser (SGD, Nesterov momentum 0.9,
decoupled weight decay applied after each step), same loss, same batch size, same augmentation
recipe, same uint8 images; only the input pipeline and the training loop differ:

- `dataloader+v2`: DataLoader(TensorDataset-style dataset) whose __getitem__ applies
  torchvision.transforms.v2 per sample (scale to [-1, 1], RandomCrop with padding, flip /
  cutout as the spec asks), the way a DataLoader pipeline normally augments; num_workers=0
  (on a shared 2-core machine worker processes only compete for the same cores).
- `dataloader+batch-aug`: DataLoader(TensorDataset) of uint8 images, then the same batch
  augmentation as ClassifierTrainer (gafi_opt.augment) on each collated batch.
- `ClassifierTrainer`: no DataLoader, an index permutation per epoch, batch augmentation,
  channels_last, fused SGD (fp32: the CPU default), and the same with `precision = "bf16"`
  where the CPU computes bf16 natively; `compiled` is the same trainer as with the spec's
  `compile = true`: the model compiled once per worker (a ModelSlot; forward and backward
  through torch.compile), the compile time reported apart, as a worker pays it once.

Workloads: the digits preset's CAS classifier (small CNN, width 16, 8x8, the 1,221 real
training digits) and a 32x32 RGB ResNet-20 (width 16, random images). Variants run
interleaved, one epoch each per round; the median epoch time gives images per second.
"% of peak" is training FLOPs (forward + backward per image, counted by
torch.utils.flop_counter) per second as a share of the best matmul rate this CPU reaches
in the variant's precision at the same thread count: how much faster the same arithmetic
could still go.

    .venv/bin/python benchmarks/cas_epoch_bench.py
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from _bench import ROOT, command_line, count_flops, interleaved, machine, measured_matmul_peak, median, set_threads, table, write_result
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import v2

from gafi_opt.data import to_float
from gafi_opt.data.augment import augment
from gafi_opt.models import build_classifier
from gafi_opt.models.accel import ModelSlot, cpu_has_native_bf16
from gafi_opt.spec import ClassifierSpec, load_spec
from gafi_opt.train.classifier import ClassifierTrainer


class PerSampleAugmented(Dataset):
    """TensorDataset with a per-sample torchvision v2 transform, as a DataLoader pipeline does it."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: ClassifierSpec, size: int):
        self.data = TensorDataset(images, labels)
        channels = images.shape[1]
        ops = [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * channels, [0.5] * channels)]  # uint8 -> [-1, 1]
        if "flip" in spec.augment:
            ops.append(v2.RandomHorizontalFlip())
        if "crop" in spec.augment and spec.crop_padding > 0:
            ops.append(v2.RandomCrop(size, padding=spec.crop_padding, fill=-1.0))
        if "cutout" in spec.augment and spec.cutout_size > 0:
            # Cutout as RandomErasing of a fixed square filled with 0 (the mid-grey of [-1, 1]).
            area = spec.cutout_size**2 / size**2
            ops.append(v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0.0))
        self.transform = v2.Compose(ops)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        image, label = self.data[index]
        return self.transform(image), label


class PlainLoop:
    """The usual loop: for x, y in loader: forward, backward, step (plus the same decoupled decay)."""

    def __init__(self, spec: ClassifierSpec, model: torch.nn.Module, loader: DataLoader, batch_augment: bool):
        self.spec, self.model, self.loader, self.batch_augment = spec, model, loader, batch_augment
        self.optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov)
        self.params = [p for p in model.parameters() if p.requires_grad]

    def train_epoch(self):
        self.model.train()
        spec = self.spec
        decay = 1.0 - spec.weight_decay * self.optimizer.param_groups[0]["lr"] / spec.lr
        for x, y in self.loader:
            if self.batch_augment:
                x = augment(to_float(x), spec.augment, spec.crop_padding, spec.cutout_size)
            loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                for p in self.params:
                    p.mul_(decay)


def workloads(args):
    digits_spec = load_spec(ROOT / "studies" / "digits.toml")
    from gafi_opt.data import load_data

    data = load_data(digits_spec.data)
    yield "digits small-cnn 8x8", digits_spec.cas, data.train_x, data.train_y, data.num_classes
    if not args.skip_resnet:
        generator = torch.Generator().manual_seed(0)
        n = args.resnet_images
        images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (n,), generator=generator)
        spec = replace(ClassifierSpec(), arch="resnet20", width=16, augment=("flip", "crop", "cutout"), crop_padding=4, cutout_size=8)
        yield "resnet20 (width 16) 32x32", spec, images, labels, 10


compile_seconds: dict[str, float] = {}


def training_flops_per_image(spec: ClassifierSpec, shape, classes: int) -> float:
    torch.manual_seed(0)
    model = build_classifier(spec, shape, classes)
    x = torch.zeros(spec.batch_size, *shape)
    y = torch.arange(spec.batch_size) % classes
    return count_flops(lambda: F.cross_entropy(model(x), y).backward()) / spec.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=21, help="digits epochs per variant (after one warm-up epoch each; one takes 0.05-0.25 s)")
    parser.add_argument("--resnet-repeats", type=int, default=3)
    parser.add_argument("--resnet-images", type=int, default=1024)
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    set_threads(args.threads)
    started = machine()
    peaks = {"fp32": measured_matmul_peak(torch.device("cpu"), torch.float32)}
    if cpu_has_native_bf16():
        peaks["bf16"] = measured_matmul_peak(torch.device("cpu"), torch.bfloat16)
    rows, records = [], []
    for name, spec, images, labels, classes in workloads(args):
        shape = tuple(images.shape[1:])

        def model():
            torch.manual_seed(0)
            return build_classifier(spec, shape, classes)

        variants = {
            "dataloader+v2": PlainLoop(spec, model(), DataLoader(PerSampleAugmented(images, labels, spec, shape[-1]),
                                                                 batch_size=spec.batch_size, shuffle=True), batch_augment=False),
            "dataloader+batch-aug": PlainLoop(spec, model(), DataLoader(TensorDataset(images, labels), batch_size=spec.batch_size,
                                                                        shuffle=True), batch_augment=True),
            "ClassifierTrainer fp32": ClassifierTrainer(spec, shape, classes, torch.device("cpu"), seed=0, precision="fp32"),
        }
        precisions = ["fp32"] + (["bf16"] if cpu_has_native_bf16() else [])
        if "bf16" in precisions:
            variants["ClassifierTrainer bf16"] = ClassifierTrainer(spec, shape, classes, torch.device("cpu"), seed=0, precision="bf16")
        for precision in precisions:
            slot = ModelSlot(build_classifier(spec, shape, classes), torch.device("cpu"))
            variants[f"ClassifierTrainer compiled {precision}"] = ClassifierTrainer(
                spec, shape, classes, torch.device("cpu"), seed=0, precision=precision, slot=slot)

        def epoch(v):
            return (lambda: v.train_epoch(images, labels)) if isinstance(v, ClassifierTrainer) else v.train_epoch

        calls = {k: epoch(v) for k, v in variants.items()}
        for k, call in calls.items():
            started = time.perf_counter()
            call()  # warm-up epoch (compiles the compiled variants, for both batch sizes of an epoch)
            if "compiled" in k:
                compile_seconds[f"{name} {k}"] = round(time.perf_counter() - started, 1)
        repeats = args.repeats if "digits" in name else args.resnet_repeats
        times = interleaved(calls, repeats)
        base = {k: median(times[k]) for k in ("dataloader+v2", "dataloader+batch-aug")}
        image_flops = training_flops_per_image(spec, shape, classes)
        for k in calls:
            seconds = median(times[k])
            share_of_peak = len(images) * image_flops / seconds / peaks["bf16" if "bf16" in k else "fp32"]
            rows.append([name, k, f"{len(images) / seconds:,.0f}", f"{base['dataloader+v2'] / seconds:.2f}x",
                         f"{base['dataloader+batch-aug'] / seconds:.2f}x", f"{share_of_peak:.0%}"])
            records.append({"workload": name, "variant": k, "images": len(images), "batch_size": spec.batch_size,
                            "augment": list(spec.augment), "median_epoch_seconds": seconds, "images_per_second": len(images) / seconds,
                            "training_flops_per_image": image_flops, "share_of_peak": share_of_peak, "epoch_seconds": times[k]})
        print(f"{name}: done", flush=True)
    text = table(["workload", "variant", "train img/s", "vs dataloader+v2", "vs dataloader+batch-aug", "% of peak"], rows)
    print(text)
    print("measured matmul peak (the 100% of '% of peak'): " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()))
    print("one-time compile seconds (the warm-up epoch, not in the timings): " + ", ".join(f"{k} {v}" for k, v in compile_seconds.items()))
    path = write_result("cas_epoch_bench", {"settings": vars(args), "machine_at_start": started, "compile_seconds": compile_seconds,
                                            "matmul_peak_flops": peaks, "results": records}, text, command_line())
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
