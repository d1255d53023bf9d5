"""Does bf16 training cost accuracy? ResNet-20 on real digits at 32x32, fp32 against bf16, several seeds.

The CAS epoch benchmark shows bf16 (`precision = "bf16"`, on a CPU with AVX512-BF16 or AMX) is the
fast path for ResNet-20 on a CPU; this one checks what it does to the classifier it trains. Same
recipe as the CAS classifier (SGD Nesterov, decoupled weight decay, lr x0.1 at 60% and 80% of the
epochs, flip + crop + cutout), the 1,221 real training digits zero-padded to 32x32 and replicated to
3 channels, test accuracy on the 360 test digits; one training run per precision and seed, the two
precisions interleaved, so the epoch-time ratio is measured side by side.

    .venv/bin/python benchmarks/precision_accuracy_bench.py --epochs 30   # 6-11 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
from _bench import ROOT, command_line, machine, positive_int, set_threads, table, write_result

from gafi_opt.data import load_data
from gafi_opt.models.accel import cpu_has_native_bf16
from gafi_opt.spec import ClassifierSpec, load_spec
from gafi_opt.train.classifier import ClassifierTrainer


def rgb(images: torch.Tensor) -> torch.Tensor:
    return images.expand(-1, 3, -1, -1).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=positive_int, default=3)
    parser.add_argument("--epochs", type=positive_int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if not cpu_has_native_bf16():
        raise SystemExit("this CPU has no native bf16 (AVX512-BF16 or AMX): nothing to compare")
    set_threads(args.threads)
    started = machine()
    spec = load_spec(ROOT / "studies" / "digits.toml", ["data.image_size=32"])
    data = load_data(spec.data)
    train_x, train_y = rgb(data.train_x), data.train_y
    test_x, test_y = rgb(data.test_x), data.test_y
    recipe = replace(ClassifierSpec(), arch="resnet20", width=16, epochs=args.epochs, augment=("flip", "crop", "cutout"),
                     crop_padding=4, cutout_size=8)
    results: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    for seed in range(args.seeds):
        for precision in results:  # interleaved: the seconds compare side by side
            trainer = ClassifierTrainer(recipe, tuple(train_x.shape[1:]), data.num_classes, torch.device("cpu"), seed=seed, precision=precision)
            begin = time.perf_counter()
            for _ in range(args.epochs):
                trainer.train_epoch(train_x, train_y)
            seconds = time.perf_counter() - begin
            accuracy = trainer.evaluate(test_x, test_y)
            results[precision].append({"seed": seed, "test_acc": accuracy, "train_seconds": seconds})
            print(f"seed {seed} {precision}: test {100 * accuracy:.2f}%  {seconds:.1f}s", flush=True)
    rows = []
    fp32_seconds = statistics.fmean(r["train_seconds"] for r in results["fp32"])
    for precision, runs in results.items():
        accs = [100 * r["test_acc"] for r in runs]
        seconds = statistics.fmean(r["train_seconds"] for r in runs)
        rows.append([precision, f"{statistics.fmean(accs):.2f} ± {statistics.stdev(accs) if len(accs) > 1 else 0:.2f}",
                     " ".join(f"{a:.2f}" for a in accs), f"{seconds:.1f}", f"{fp32_seconds / seconds:.2f}x"])
    text = table(["precision", "test accuracy % (mean ± sd)", "per seed", "train seconds (mean)", "speed vs fp32"], rows)
    print(text)
    path = write_result("precision_accuracy_bench", {"settings": vars(args), "machine_at_start": started, "results": results},
                        text, command_line())
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
