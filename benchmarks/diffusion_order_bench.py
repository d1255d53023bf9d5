"""Which order for a diffusion pipeline's knob stages: CAS on digits over a joint grid of sampler x steps x guidance.

On the digits-diffusion preset's generator at one checkpoint (default: its last), every point of the grid
is one CAS trial with the checkpoint stage's recipe (stddev 1, filter at threshold 0, set renewed every
10 classifier epochs), repeated over `--seeds` classifier seeds, through the library's own trial
(gafi_opt.cas.train_cas). Reported per point: val and test CAS (mean over seeds) and the seconds a trial
took (synthesis dominates them: every step is a UNet pass over the whole set, two with guidance).

From that table it replays what each stage order would choose: starting at the preset's defaults, each
knob stage takes the value of best mean val along its own axis (the stage-wise argmax the pipeline runs),
with the seconds its trials cost; and the joint grid's best. An order that reaches the joint best's test
CAS for fewer seconds is the better order.

It uses the models of `gafi-opt run studies/digits-diffusion.toml` (runs/digits-diffusion), or trains the
filter and generator there with the library when they are missing.

    .venv/bin/python benchmarks/diffusion_order_bench.py
    .venv/bin/python benchmarks/diffusion_order_bench.py --seeds 3 --guidance 0 0.5 1 2 --steps 5 10 20
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import torch
from _bench import ROOT, command_line, machine, positive_int, result_name, set_threads, table, write_result

from gafi_opt.cas import TrialContext, train_cas
from gafi_opt.data import load_data
from gafi_opt.models.checkpoints import checkpoint_paths
from gafi_opt.search.stages import TrialConfig
from gafi_opt.spec import load_spec
from gafi_opt.train.generator import train_generator
from gafi_opt.train.real import train_real_classifier

KNOBS = ("sampler", "guidance", "steps")
ORDERS = {
    "sampler -> guidance -> steps": ("sampler", "guidance", "steps"),
    "sampler -> steps -> guidance": ("sampler", "steps", "guidance"),
    "guidance -> steps": ("guidance", "steps"),
    "steps -> guidance": ("steps", "guidance"),
}


def measure(ctx: TrialContext, checkpoint: int, points: list[tuple], seeds: int, log) -> dict:
    """(sampler, guidance, steps) -> {val, test, seconds} means over the seeds."""
    results = {}
    for point in points:
        sampler, guidance, steps = point
        runs = []
        for seed in range(seeds):
            config = TrialConfig("order", checkpoint, 1.0, 0.0, 10, seed, guidance=guidance, steps=steps, sampler=sampler)
            started = time.perf_counter()
            result = train_cas(ctx, config)
            runs.append({"val": result.val_acc, "test": result.test_acc, "seconds": time.perf_counter() - started})
        results[point] = {key: statistics.fmean(r[key] for r in runs) for key in ("val", "test", "seconds")}
        results[point]["runs"] = runs
        log(f"{sampler} guidance {guidance:g} steps {steps}: val {results[point]['val']:.4f} test {results[point]['test']:.4f} "
            f"{results[point]['seconds']:.1f} s/trial")  # fmt: skip
    return results


def replay(order: tuple[str, ...], start: dict, axes: dict, results: dict, seeds: int) -> dict:
    """What the stages in `order` choose from `start`, each by best mean val on its own axis; the trials' seconds."""
    chosen, seconds, evaluated = dict(start), 0.0, set()
    for knob in order:
        candidates = []
        for value in axes[knob]:
            point = _point({**chosen, knob: value})
            if point not in evaluated:  # a point the stage before evaluated is reused, as the pipeline does
                seconds += results[point]["seconds"] * seeds
                evaluated.add(point)
            candidates.append((results[point]["val"], value))
        chosen[knob] = max(candidates, key=lambda c: c[0])[1]
    final = results[_point(chosen)]
    return {"chosen": chosen, "val": final["val"], "test": final["test"], "seconds": seconds}


def _point(knobs: dict) -> tuple:
    return knobs["sampler"], float(knobs["guidance"]), int(knobs["steps"])


def models(spec, data, log) -> None:
    if not checkpoint_paths(spec) or not (spec.run_path / "filter.pt").exists():
        log(f"training the preset's filter and generator in {spec.run_path}")
    train_real_classifier(spec, data, torch.device("cpu"), progress=False)
    train_generator(spec, data, torch.device("cpu"), seed=spec.seed, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "digits-diffusion"))
    parser.add_argument("--checkpoint", type=positive_int, default=None, help="generator epoch (default: the preset's last)")
    parser.add_argument("--samplers", nargs="+", default=["ddim", "dpm-solver"], choices=["ddim", "dpm-solver", "ddpm"])
    parser.add_argument("--guidance", nargs="+", type=float, default=[0.0, 1.0, 2.0])
    parser.add_argument("--steps", nargs="+", type=positive_int, default=[5, 10, 20])
    parser.add_argument("--seeds", type=positive_int, default=2, help="classifier seeds per point")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--output", type=result_name, default="diffusion_order_bench")
    args = parser.parse_args()
    set_threads(args.threads)
    started_machine = machine()
    started = time.perf_counter()
    spec = load_spec(ROOT / "studies" / "digits-diffusion.toml", [f"run_dir={args.run_dir}"])
    data = load_data(spec.data)
    models(spec, data, print)
    checkpoint = args.checkpoint or int(max(spec.checkpoint.values))
    default = spec.generator.diffusion
    start = {"sampler": default.sampler, "guidance": default.guidance, "steps": default.steps}
    axes = {"sampler": args.samplers, "guidance": args.guidance, "steps": args.steps}
    for knob, value in start.items():
        if value not in axes[knob]:
            parser.error(f"the preset's default {knob} ({value}) must be on the grid")
    ctx = TrialContext(spec, data, torch.device("cpu"))
    points = [(s, float(g), int(n)) for s, g, n in itertools.product(args.samplers, args.guidance, args.steps)]
    results = measure(ctx, checkpoint, points, args.seeds, lambda line: print(line, flush=True))

    rows = [[s, g, n, f"{100 * r['val']:.2f}", f"{100 * r['test']:.2f}", f"{r['seconds']:.1f}"] for (s, g, n), r in results.items()]
    text = table(["sampler", "guidance", "steps", "val CAS %", "test CAS %", "s/trial"], rows)
    joint = max(results, key=lambda p: results[p]["val"])
    replays = {name: replay(order, start, axes, results, args.seeds) for name, order in ORDERS.items() if all(len(axes[k]) > 0 for k in order)}
    order_rows = [[name, r["chosen"]["sampler"], r["chosen"]["guidance"], r["chosen"]["steps"], f"{100 * r['val']:.2f}", f"{100 * r['test']:.2f}",
                   f"{r['seconds']:.0f}"] for name, r in replays.items()]  # fmt: skip
    order_rows.append(["joint grid (every point)", *joint, f"{100 * results[joint]['val']:.2f}", f"{100 * results[joint]['test']:.2f}",
                       f"{sum(r['seconds'] for r in results.values()) * args.seeds:.0f}"])  # fmt: skip
    order_text = table(["order", "sampler", "guidance", "steps", "val CAS % (chosen)", "test CAS % (chosen)", "search seconds"], order_rows)
    wall = time.perf_counter() - started
    print(text)
    print(order_text)
    print(f"checkpoint {checkpoint}, {args.seeds} classifier seed(s) per point; wall time {wall:.0f} s")
    payload = {"settings": vars(args), "machine_at_start": started_machine, "checkpoint": checkpoint, "start": start,
               "points": [{"sampler": s, "guidance": g, "steps": n, **r} for (s, g, n), r in results.items()],
               "orders": replays, "joint_best": {"point": joint, **{k: results[joint][k] for k in ("val", "test")}}, "wall_seconds": wall}  # fmt: skip
    path = write_result(args.output, payload, text + "\n\n" + order_text, command_line())
    print(f"written {Path(path).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
