"""Benchmark 4 (needs CUDA): seconds per CAS epoch with ResNet-20 at 32x32 on 40,000 images, regeneration included.

One epoch as the final stage runs it (Dynamic Dataset Recycle with N=1): regenerate and
filter the whole synthetic set (BigGAN-deep, the CIFAR-10 preset's sizes, random weights;
filter: the preset's ResNet-20 with a nearest-class-mean head over its random features, so
that acceptance is neither 0 nor 1, at `--threshold`), then one training epoch of the
preset's CAS classifier (ResNet-20, width 64, batch 128, flip + crop + cutout), then the
evaluation of 10,000 val images. The library's own paths are timed: SyntheticSource (bf16
autocast, channels_last, one batched pass) and ClassifierTrainer (bf16, fused SGD).

The fraction of the device's peak is FLOPs done / time / peak, with FLOPs counted by
torch.utils.flop_counter (generator and filter forwards, training forward + backward,
evaluation forward) and the peak measured as the best bf16 matmul rate on this device
(a large square matmul: what the tensor cores actually deliver).

On a machine without CUDA it prints "no CUDA device: skipped" and records that.

    .venv/bin/python benchmarks/gpu_epoch_bench.py [--epochs 3] [--compile]
"""

from __future__ import annotations

import argparse
import time

import torch
from _bench import ROOT, command_line, count_flops, machine, measured_matmul_peak, median, table, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40_000)
    parser.add_argument("--val-images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch")
    parser.add_argument("--threshold", type=float, default=0.0, help="filter threshold of the regeneration")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--synth-batch", type=int, default=2048)
    parser.add_argument("--compile", action="store_true", help="torch.compile generator, filter and classifier first")
    parser.add_argument("--smoke-cpu", action="store_true", help="run the same code on the CPU with tiny sizes (a check, not a benchmark)")
    args = parser.parse_args()
    started = machine()
    if args.smoke_cpu:
        args.images, args.val_images, args.epochs, args.synth_batch, args.threshold = 200, 100, 1, 128, None
    elif not torch.cuda.is_available():
        print("no CUDA device: skipped")
        write_result("gpu_epoch_bench", {"skipped": "no CUDA device", "settings": vars(args), "machine_at_start": started},
                     "no CUDA device: skipped", command_line())
        return

    from dataclasses import replace

    from synthesis_bench import NearestMeanHead, calibrated_temperature

    from gafi_opt.models import build_classifier, build_generator
    from gafi_opt.models.accel import ModelSlot, compile_model
    from gafi_opt.spec import load_spec
    from gafi_opt.synth import SyntheticSource, prepare_filter, prepare_generator
    from gafi_opt.train.classifier import ClassifierTrainer

    device = torch.device("cpu" if args.smoke_cpu else "cuda")
    torch.backends.cudnn.benchmark = True
    spec = load_spec(ROOT / "studies" / "cifar10.toml")
    if args.smoke_cpu:  # tiny models: this only checks that the code runs
        spec = spec.with_overrides(["generator.width=32", "generator.embed_dim=16", "filter.width=8", "cas.width=8"])
    cas = replace(spec.cas, batch_size=args.batch_size)
    shape, classes = (3, 32, 32), 10
    torch.manual_seed(0)
    generator = build_generator(spec.generator, shape, classes).to(device).eval()
    backbone = build_classifier(spec.filter, shape, classes).to(device).eval()
    features = torch.nn.Sequential(backbone.stem, backbone.stages, backbone.pool)
    with torch.inference_mode():
        y = torch.arange(classes, device=device).repeat_interleave(64)
        f = features(generator(torch.randn(y.numel(), spec.generator.latent_dim, device=device), y).clamp(-1, 1))
        means = torch.stack([f[y == c].mean(0) for c in range(classes)])
        temperature = calibrated_temperature(torch.cdist(f.float(), means.float()).pow(2), target=0.85)
    filter_model = NearestMeanHead(features, means, temperature).eval()
    generator = prepare_generator(generator, device, classes)
    filter_model = prepare_filter(filter_model, device, f.new_zeros(8, *shape))
    slot = None
    if args.compile:
        generator, filter_model = compile_model(generator), compile_model(filter_model)
        slot = ModelSlot(build_classifier(cas, shape, classes), device)
    per_class = args.images // classes
    source = SyntheticSource(generator, classes, per_class, threshold=args.threshold, filter_model=filter_model,
                             batch_size=args.synth_batch, device=device, seed=0)
    trainer = ClassifierTrainer(cas, shape, classes, device, seed=0, slot=slot)
    val_x = torch.randint(0, 256, (args.val_images, *shape), dtype=torch.uint8, device=device)
    val_y = torch.randint(0, classes, (args.val_images,), device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    phases = {"regenerate": [], "train": [], "evaluate": []}
    for epoch in range(args.epochs + 1):
        marks = []
        sync()
        marks.append(time.perf_counter())
        source.fill()
        sync()
        marks.append(time.perf_counter())
        trainer.train_epoch(source.images, source.labels)
        sync()
        marks.append(time.perf_counter())
        trainer.evaluate(val_x, val_y)
        sync()
        marks.append(time.perf_counter())
        if epoch:  # the first epoch warms up (cuDNN autotuning, compilation)
            for name, a, b in zip(phases, marks, marks[1:]):
                phases[name].append(b - a)
        print(f"epoch {epoch}: " + ", ".join(f"{n} {b - a:.2f}s" for n, a, b in zip(phases, marks, marks[1:]))
              + f" (acceptance {source.stats.acceptance_rate:.3f})", flush=True)

    # FLOPs of one epoch: candidates generated and filtered, training fwd+bwd, evaluation forward.
    generated_per_epoch = int(source.stats.generated.sum()) / (args.epochs + 1)
    z = torch.randn(256, spec.generator.latent_dim, device=device)
    yy = torch.arange(256, device=device) % classes
    with torch.inference_mode():
        gen_flops = count_flops(lambda: generator(z, yy)) / 256
        filt_flops = count_flops(lambda: filter_model(torch.zeros(256, *shape, device=device))) / 256
    model = build_classifier(cas, shape, classes).to(device)
    x = torch.zeros(cas.batch_size, *shape, device=device)
    train_flops = count_flops(lambda: torch.nn.functional.cross_entropy(model(x), yy[: cas.batch_size]).backward()) / cas.batch_size
    with torch.inference_mode():
        eval_flops = count_flops(lambda: model(x)) / cas.batch_size
    epoch_flops = generated_per_epoch * (gen_flops + filt_flops) + args.images * train_flops + args.val_images * eval_flops
    peak = measured_matmul_peak(device, torch.bfloat16, (512,) if args.smoke_cpu else (4096, 8192))
    epoch_seconds = median([sum(t) for t in zip(*phases.values())])
    rows = [[name, f"{median(t):.2f}"] for name, t in phases.items()]
    rows.append(["epoch (median)", f"{epoch_seconds:.2f}"])
    rows.append(["achieved TFLOP/s", f"{epoch_flops / epoch_seconds / 1e12:.1f}"])
    rows.append(["measured bf16 matmul peak TFLOP/s", f"{peak / 1e12:.0f}"])
    rows.append(["fraction of peak", f"{epoch_flops / epoch_seconds / peak:.1%}"])
    rows.append(["acceptance rate", f"{source.stats.acceptance_rate:.3f}"])
    text = table(["phase", "seconds / value"], rows)
    print(text)
    if args.smoke_cpu:
        return  # a check that the code runs; nothing to record
    write_result("gpu_epoch_bench", {"settings": vars(args), "machine_at_start": started, "phases": phases,
                                     "epoch_flops": epoch_flops, "peak_flops": peak, "generated_per_epoch": generated_per_epoch},
                 text, command_line())


if __name__ == "__main__":
    main()
