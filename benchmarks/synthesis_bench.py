"""Benchmark 1: accepted images per second of generate + filter, batched SyntheticSource vs the official way.

The reference (gafi_opt/synth_reference.py) is written as the official GaFi code does it: a
Python loop per class that generates the missing count, filters it, then generates twice the
count still missing, filtering each batch on its own, with per-class host round trips, in
fp32. The fast path is `SyntheticSource.fill()`: all classes in one batched pass under
inference mode, class-pooled acceptance, BatchNorm folded and channels_last (fp32), and
where the CPU computes bf16 natively (AVX512-BF16 or AMX) the same with both models cast
to bf16 once (`precision = "bf16"`); each also compiled (`compile = true`) for digits.

Each timed call makes the whole set from nothing (a fresh source, so no acceptance rate is
known in advance); the models are prepared once beforehand, as a worker does for its trials.
Variants run interleaved (ref, fast, fast-bf16, ref, ...); medians are reported.

How close each variant comes to the machine: FLOPs per candidate (generator + filter
forward, counted by torch.utils.flop_counter) times the candidates it made, per second, as
a share of the best matmul rate this CPU reaches in the variant's precision at the same
thread count. A variant near 100% cannot get faster without doing less arithmetic.

Acceptance statistics are compared per class: over all repetitions each variant's accepted
and generated counts per class give a two-proportion z score per class; the table shows the
overall acceptance rates, the largest |z| and the p-value of sum(z^2) ~ chi2(classes)
(a p-value far from 0 means no detectable difference between the two).

Models: the trained digits generator and filter from runs/digits when present (else a small
one is trained here with the library), and a DCGAN-size generator at 32x32 (width 64, random
weights) with a ResNet-20 filter (width 16, random weights) whose head is replaced by
nearest-class-mean logits over its features, so that acceptance is neither 0 nor 1.
Diffusion rows: the trained digits-diffusion generator (runs/digits-diffusion, else trained here
for 20 epochs) with its filter, and `unet32`, the DDPM CIFAR-10 UNet layout (channel multipliers
1, 2, 2, 2, attention at 16x16) at width 32 with random weights and the same nearest-mean filter;
both sample with `--diffusion-sampler`, `--diffusion-steps` and `--diffusion-guidance`. A diffusion
image costs steps UNet passes (twice that with guidance), so these rows have their own repeats.

    .venv/bin/python benchmarks/synthesis_bench.py
    .venv/bin/python benchmarks/synthesis_bench.py --models digits --repeats 9
    .venv/bin/python benchmarks/synthesis_bench.py --models digits-diffusion unet32 --output synthesis_bench_diffusion
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from _bench import ROOT, command_line, count_flops, interleaved, machine, measured_matmul_peak, median, result_name, set_threads, table, write_result
from scipy import stats as scipy_stats
from torch import nn

from gafi_opt.data import to_float
from gafi_opt.models.accel import compile_model, cpu_has_native_bf16
from gafi_opt.synth import SyntheticSource, prepare_filter, prepare_generator
from gafi_opt.testing.reference_synthesis import reference_synthesis

THRESHOLDS = (0.0, 0.5, 0.9)
compile_seconds: dict[str, float] = {}


# ---------------------------------------------------------------- models


def trained_models(preset: str, run_dir: Path, epoch: int | None, quick_epochs: int):
    """The trained generator of studies/<preset>.toml (latest or given epoch) and its filter, or small ones
    trained here (`quick_epochs` generator epochs) when run_dir holds none."""
    from gafi_opt.data import load_data
    from gafi_opt.models.checkpoints import checkpoint_paths, load_generator
    from gafi_opt.spec import load_spec
    from gafi_opt.train.generator import train_generator
    from gafi_opt.train.real import load_filter, train_real_classifier

    study = ROOT / "studies" / f"{preset}.toml"
    spec = load_spec(study, [f"run_dir={run_dir}"])
    data = load_data(spec.data)
    origin = f"trained {preset} models from {run_dir}"
    if not (run_dir / "filter.pt").exists() or not checkpoint_paths(spec):
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix="gafi-synth-bench-"))
        spec = load_spec(study, [f"run_dir={scratch}", f"generator.epochs={quick_epochs}", f"checkpoint.values=[{quick_epochs}]"])
        train_real_classifier(spec, data, torch.device("cpu"), progress=False)
        train_generator(spec, data, torch.device("cpu"), seed=0, progress=False)
        origin = f"{preset} models trained by this benchmark ({quick_epochs} generator epochs)"
    paths = checkpoint_paths(spec)
    epoch = epoch or max(paths)
    generator = load_generator(spec, paths[epoch], data.image_shape, data.num_classes)
    filter_model = load_filter(spec, data.image_shape, data.num_classes, "cpu")
    per_class = data.train_y.numel() // data.num_classes  # the paper's rule: real train size / classes
    return generator, filter_model, data.num_classes, per_class, f"{origin}, generator epoch {epoch}", to_float(data.val_x[:256])


class NearestMeanHead(nn.Module):
    """Random ResNet features, logits = -|f - mean_c|^2 / temperature: a filter with class structure."""

    def __init__(self, features: nn.Module, means: torch.Tensor, temperature: float):
        super().__init__()
        self.features = features
        self.register_buffer("means", means)
        self.temperature = temperature

    def forward(self, x):
        f = self.features(x)
        return -torch.cdist(f, self.means).pow(2) / self.temperature


def calibrated_temperature(squared_distances: torch.Tensor, target: float) -> float:
    """The temperature at which the median top softmax probability is `target` (bisection in log space)."""
    low, high = 1e-6, 1e6
    for _ in range(60):
        mid = (low * high) ** 0.5
        top = (-squared_distances / mid).softmax(1).max(1).values.median()
        low, high = (mid, high) if top > target else (low, mid)
    return (low * high) ** 0.5


def unet32_models(per_class: int):
    from gafi_opt.models.diffusion import build_diffusion_generator
    from gafi_opt.spec import DiffusionSpec, GeneratorSpec

    torch.manual_seed(0)
    classes = 10
    layout = DiffusionSpec(channel_mult=(1, 2, 2, 2), layers_per_block=2, attention=(False, True, False, False), mid_attention=True)
    generator = build_diffusion_generator(GeneratorSpec(arch="diffusion", width=32, diffusion=layout), (3, 32, 32), classes).eval()
    filter_model = nearest_mean_filter(generator, classes, 4)  # a handful: each image is a whole reverse process
    description = "diffusers UNet2DModel in the DDPM CIFAR-10 layout at width 32 (mult 1,2,2,2, attention at 16x16), random weights, + ResNet-20 (width 16) class-mean filter"
    return generator, filter_model, classes, per_class, description, None


def nearest_mean_filter(generator, classes: int, images_per_class: int) -> nn.Module:
    """A ResNet-20 (width 16, random weights) whose logits are distances to the class means of its features over the generator's images."""
    from gafi_opt.models.resnet import resnet20

    backbone = resnet20(3, classes, width=16).eval()
    features = nn.Sequential(backbone.stem, backbone.stages, backbone.pool)
    with torch.inference_mode():  # class means of the random features over the random generator's images
        y = torch.arange(classes).repeat_interleave(images_per_class)
        f = features(generator(torch.randn(y.numel(), generator.latent_dim), y).clamp(-1, 1))
        means = torch.stack([f[y == c].mean(0) for c in range(classes)])
        temperature = calibrated_temperature(torch.cdist(f, means).pow(2), target=0.85)
    return NearestMeanHead(features, means, temperature).eval()


def dcgan_models(per_class: int):
    from gafi_opt.models.small import DCGANGenerator

    torch.manual_seed(0)
    classes = 10
    generator = DCGANGenerator(128, classes, (3, 32, 32), width=64).eval()
    filter_model = nearest_mean_filter(generator, classes, 32)
    description = "DCGAN generator (width 64, latent 128) + ResNet-20 (width 16) features with class-mean head, random weights"
    return generator, filter_model, classes, per_class, description, None


# ---------------------------------------------------------------- comparison


def compare_acceptance(a: dict, b: dict) -> dict:
    """Per-class two-proportion z scores between two variants' pooled counts."""
    z = []
    for acc_a, gen_a, acc_b, gen_b in zip(a["accepted"], a["generated"], b["accepted"], b["generated"]):
        if not gen_a or not gen_b:
            continue
        pooled = (acc_a + acc_b) / (gen_a + gen_b)
        se = math.sqrt(pooled * (1 - pooled) * (1 / gen_a + 1 / gen_b))
        z.append(0.0 if se == 0 else (acc_a / gen_a - acc_b / gen_b) / se)
    chi2 = sum(v * v for v in z)
    return {"max_abs_z": max(abs(v) for v in z) if z else 0.0, "chi2": chi2, "dof": len(z),
            "p_value": float(scipy_stats.chi2.sf(chi2, len(z))) if z else 1.0}


def flops_per_candidate(generator, filter_model, classes, example) -> float:
    """Generator + filter forward FLOPs for one candidate image."""
    z, y = _latents(generator.latent_dim, classes)
    with torch.inference_mode():
        return (count_flops(lambda: generator(z, y)) + count_flops(lambda: filter_model(example[: len(y)]))) / len(y)


def run_model(name, generator, filter_model, classes, per_class, args, example, peaks):
    device = torch.device("cpu")
    example = example if example is not None else generator(*_latents(generator.latent_dim, classes)).detach().clamp(-1, 1)
    candidate_flops = flops_per_candidate(generator, filter_model, classes, example)
    precisions = ["fp32"] + (["bf16"] if cpu_has_native_bf16() and not args.no_bf16 else [])
    variants = {"reference": "fp32"}
    models = {}
    for precision in precisions:  # prepared once per worker, as TrialContext does (bf16: weights cast once)
        variants[f"fast {precision}"] = precision
        models[f"fast {precision}"] = (prepare_generator(generator, device, classes, precision),
                                       prepare_filter(filter_model, device, example, precision))
    if name in args.compile:  # spec `compile = true`: compiled once (not timed), then reused by every call
        for precision in precisions:
            started = time.perf_counter()
            g, f = models[f"fast {precision}"]
            compiled = (compile_model(g), compile_model(f))
            for threshold in THRESHOLDS:  # compile for the full and the partial batch shapes
                SyntheticSource(compiled[0], classes, per_class, threshold=threshold, filter_model=compiled[1],
                                batch_size=args.batch_size, seed=999, precision=precision).fill()
            compile_seconds[f"{name} {precision}"] = time.perf_counter() - started
            variants[f"fast {precision} compiled"] = precision
            models[f"fast {precision} compiled"] = compiled
    counts = {(v, t): {"accepted": [0] * classes, "generated": [0] * classes, "fallback": 0, "calls": 0}
              for v in variants for t in THRESHOLDS}
    seed = iter(range(10**6))

    def record(key, accepted, generated, fallback):
        entry = counts[key]
        entry["accepted"] = [x + int(y) for x, y in zip(entry["accepted"], accepted)]
        entry["generated"] = [x + int(y) for x, y in zip(entry["generated"], generated)]
        entry["fallback"] += int(fallback)
        entry["calls"] += 1

    def call(variant, threshold):
        def run():
            s = next(seed)
            if variant == "reference":
                _, _, st = reference_synthesis(generator, filter_model, classes, per_class, threshold=threshold,
                                               max_attempts=args.max_attempts, batch_size=args.batch_size, seed=s)
            else:
                gen, filt = models[variant]
                source = SyntheticSource(gen, classes, per_class, threshold=threshold, filter_model=filt, max_attempts=args.max_attempts,
                                         batch_size=args.batch_size, seed=s, precision=variants[variant])
                source.fill()
                st = source.stats
            record((variant, threshold), st.accepted.tolist(), st.generated.tolist(), st.fallback.sum())
        return run

    calls = {f"{v}@{t}": call(v, t) for t in THRESHOLDS for v in variants}
    for fn in calls.values():  # warm-up: allocator, oneDNN primitive caches
        fn()
    for entry in counts.values():
        entry.update(accepted=[0] * classes, generated=[0] * classes, fallback=0, calls=0)
    times = interleaved(calls, {"digits": args.repeats, "dcgan32": args.dcgan_repeats}.get(name, args.diffusion_repeats))

    rows, records = [], []
    total = classes * per_class
    for t in THRESHOLDS:
        ref_key = ("reference", t)
        ref_time = median(times[f"reference@{t}"])
        for v in variants:
            entry = counts[(v, t)]
            seconds = median(times[f"{v}@{t}"])
            kept = total - entry["fallback"] / entry["calls"]
            rate = sum(entry["accepted"]) / max(1, sum(entry["generated"]))
            flop_rate = sum(entry["generated"]) / entry["calls"] * candidate_flops / seconds
            share_of_peak = flop_rate / peaks[variants[v]]
            cmp = compare_acceptance(entry, counts[ref_key]) if v != "reference" else None
            record_row = {"model": name, "threshold": t, "variant": v, "median_seconds": seconds, "accepted_per_second": kept / seconds,
                          "speedup_vs_reference": ref_time / seconds, "acceptance_rate": rate,
                          "generated_per_call": sum(entry["generated"]) / entry["calls"],
                          "fallback_per_call": entry["fallback"] / entry["calls"], "comparison": cmp,
                          "flops_per_candidate": candidate_flops, "gflops_per_second": flop_rate / 1e9, "share_of_peak": share_of_peak,
                          "per_class_accepted": entry["accepted"], "per_class_generated": entry["generated"],
                          "seconds": times[f"{v}@{t}"]}
            records.append(record_row)
            rate_text = f"{kept / seconds:,.0f}" if kept / seconds >= 10 else f"{kept / seconds:.2f}"  # a diffusion UNet at 32x32: a few a second
            rows.append([name, t, v, rate_text, f"{ref_time / seconds:.2f}x", f"{rate:.4f}",
                         f"{record_row['generated_per_call']:.0f}", f"{record_row['fallback_per_call']:.1f}",
                         f"{flop_rate / 1e9:.0f}", f"{share_of_peak:.0%}",
                         "-" if cmp is None else f"{cmp['max_abs_z']:.2f}", "-" if cmp is None else f"{cmp['p_value']:.2f}"])
    return rows, records


def _latents(latent_dim, classes):
    g = torch.Generator().manual_seed(1)
    y = torch.arange(64) % classes
    return torch.randn(64, latent_dim, generator=g), y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["digits", "dcgan32", "digits-diffusion"], choices=["digits", "dcgan32", "digits-diffusion", "unet32"])
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "digits"))
    parser.add_argument("--epoch", type=int, default=None, help="digits generator checkpoint (default: the latest)")
    parser.add_argument("--repeats", type=int, default=25, help="timed sets per variant and threshold (a digits set takes about 30 ms)")
    parser.add_argument("--dcgan-per-class", type=int, default=20, help="a DCGAN image costs about 3 ms on one CPU core")
    parser.add_argument("--dcgan-repeats", type=int, default=3)
    parser.add_argument("--diffusion-run-dir", default=str(ROOT / "runs" / "digits-diffusion"))
    parser.add_argument("--diffusion-steps", type=int, default=10, help="sampling steps of the diffusion rows (the digits-diffusion preset's default)")
    parser.add_argument("--diffusion-guidance", type=float, default=0.0, help="classifier-free guidance w of the diffusion rows (w > 0: two UNet passes a step)")
    parser.add_argument("--diffusion-sampler", default="dpm-solver", choices=["ddim", "dpm-solver", "ddpm"])
    parser.add_argument("--diffusion-repeats", type=int, default=3, help="timed sets per variant and threshold of the diffusion rows")
    parser.add_argument("--unet32-per-class", type=int, default=4, help="a unet32 image costs about 1.5 GFLOP per step")
    parser.add_argument("--output", type=result_name, default="synthesis_bench", help="results file name under benchmarks/results/")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--max-attempts", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--compile", nargs="*", default=["digits"], choices=["digits", "dcgan32"],
                        help="models that also run compiled (torch.compile, as spec compile = true)")
    args = parser.parse_args()
    set_threads(args.threads)
    started = machine()
    peaks = {"fp32": measured_matmul_peak(torch.device("cpu"), torch.float32)}
    if cpu_has_native_bf16() and not args.no_bf16:
        peaks["bf16"] = measured_matmul_peak(torch.device("cpu"), torch.bfloat16)
    rows, records, described = [], [], {}
    with torch.inference_mode(False):
        for name in args.models:
            if name == "digits":
                models = trained_models("digits", Path(args.run_dir), args.epoch, quick_epochs=30)
            elif name == "dcgan32":
                models = dcgan_models(args.dcgan_per_class)
            elif name == "digits-diffusion":
                models = trained_models("digits-diffusion", Path(args.diffusion_run_dir), None, quick_epochs=20)
            else:
                models = unet32_models(args.unet32_per_class)
            generator, filter_model, classes, per_class, description, example = models
            if hasattr(generator, "configure"):  # a diffusion generator: the knobs of its rows
                generator.configure(sampler=args.diffusion_sampler, steps=args.diffusion_steps, guidance=args.diffusion_guidance)
                description += f"; {args.diffusion_sampler}, {args.diffusion_steps} steps, guidance {args.diffusion_guidance:g}"
            described[name] = {"models": description, "classes": classes, "per_class": per_class}
            r, rec = run_model(name, generator, filter_model, classes, per_class, args, example, peaks)
            rows += r
            records += rec
            print(f"{name}: {description}; {classes} classes x {per_class}", flush=True)
    headers = ["model", "threshold", "variant", "accepted img/s", "vs reference", "acceptance", "generated/set",
               "fallback/set", "GFLOP/s", "% of peak", "max |z| vs ref", "p (chi2) vs ref"]
    text = table(headers, rows)
    print(text)
    if compile_seconds:
        print("one-time compile seconds (not in the timings): " + ", ".join(f"{k} {v:.0f}" for k, v in compile_seconds.items()))
    print("measured matmul peak (the 100% of '% of peak'): " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()))
    path = write_result(args.output, {"settings": vars(args), "machine_at_start": started, "models": described,
                                            "compile_seconds": compile_seconds,
                                            "matmul_peak_flops": peaks, "results": records}, text, command_line())
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
