"""GAN against diffusion on digits: the whole GaFi pipeline of each preset, over several pipeline seeds, side by side.

For each preset (studies/digits.toml: the conditional MLP GAN; studies/digits-diffusion.toml: the
diffusers UNet) and each seed, the whole pipeline runs as `gafi-opt run` does (gafi_opt.run_pipeline:
filter classifier, real-only baseline, generator, every stage, final), the seed being the spec's `seed`
(generator and filter initialisation and training, classifier seeds of the stages; the data split stays
data.split_seed's). One row per preset gives, as mean ± sample stdev over the pipeline seeds of each
pipeline's own numbers (test accuracy on real data): the synthetic baseline (last checkpoint, no GaFi),
the GaFi-tuned CAS (the final stage, itself a mean over final.seeds classifiers), the real-data baseline
(the filter classifier) and the real-only baseline (the CAS recipe on real data); then the knobs each
seed chose and the wall time per pipeline.

Pipelines live in one SQLite storage under --run-root; run the script again after an interruption and
finished pipelines are read back, not run again (their wall time is then the one recorded when they ran).

    .venv/bin/python benchmarks/digits_gan_vs_diffusion.py                     # 3 seeds of each preset
    .venv/bin/python benchmarks/digits_gan_vs_diffusion.py --seeds 1 --presets digits-diffusion
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import optuna
from _bench import ROOT, command_line, machine, positive_int, result_name, set_threads, table, write_result

from gafi_opt.pipeline import Pipeline
from gafi_opt.report import summary_row
from gafi_opt.runner import run_pipeline
from gafi_opt.spec import load_spec
from gafi_opt.storages import open_storage

PRESETS = ("digits", "digits-diffusion")
WALL_ATTR = "benchmark_wall_seconds"  # recorded on the pipeline's root study when this script ran it
KNOBS = ("checkpoint", "sampler", "guidance", "steps", "stddev", "threshold")


def run_one(preset: str, seed: int, root: Path, storage) -> dict:
    spec = load_spec(ROOT / "studies" / f"{preset}.toml", [f"name={preset}-s{seed}", f"seed={seed}", f"run_dir={root / f'{preset}-s{seed}'}"])
    pipeline = Pipeline.create_or_load(spec, storage)
    if WALL_ATTR not in pipeline.attrs():
        started = time.perf_counter()
        run_pipeline(spec, storage, "cpu", progress=False)
        pipeline.set_attr(WALL_ATTR, time.perf_counter() - started)
    row = summary_row(pipeline)
    row["wall_seconds"] = pipeline.attrs()[WALL_ATTR]
    return row


def mean_sd(values: list[float]) -> str:
    values = [100 * v for v in values]
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.2f}{spread}"


def chosen(row: dict) -> str:
    parts = [f"{knob} {row[knob]:g}" if isinstance(row[knob], float) else f"{knob} {row[knob]}" for knob in KNOBS if row.get(knob) is not None]
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--seeds", type=positive_int, default=3, help="pipeline seeds per preset (0, 1, ...)")
    parser.add_argument("--run-root", default=str(ROOT / "runs" / "gan-vs-diffusion"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--output", type=result_name, default="digits_gan_vs_diffusion")
    args = parser.parse_args()
    set_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as the CLI: one line per pipeline, not per trial
    started_machine = machine()
    started = time.perf_counter()
    root = Path(args.run_root)
    root.mkdir(parents=True, exist_ok=True)
    storage = open_storage(f"sqlite:///{root / 'gafi.db'}")
    rows: dict[str, list[dict]] = {}
    for preset in args.presets:
        for seed in range(args.seeds):
            row = run_one(preset, seed, root, storage)
            rows.setdefault(preset, []).append(row)
            print(f"{preset} seed {seed}: CAS {100 * row['cas_test']:.2f}%, synthetic baseline {100 * row['synthetic_baseline_test']:.2f}%, "
                  f"real {100 * row['real_test']:.2f}%; {chosen(row)}; {row['wall_seconds']:.0f} s", flush=True)  # fmt: skip

    summary = []
    for preset, runs in rows.items():
        walls = [r["wall_seconds"] for r in runs]
        summary.append([
            preset, len(runs), mean_sd([r["synthetic_baseline_test"] for r in runs]), mean_sd([r["cas_test"] for r in runs]),
            mean_sd([r["real_test"] for r in runs]), mean_sd([r["real_only_test"] for r in runs]),
            f"{statistics.fmean(walls):.0f}", "; ".join(f"s{i}: {chosen(r)}" for i, r in enumerate(runs)),
        ])  # fmt: skip
    headers = ["preset", "seeds", "synthetic baseline %", "GaFi-tuned CAS %", "real (filter) %", "real-only %", "wall s / pipeline", "chosen knobs per seed"]
    text = table(headers, summary)
    wall = time.perf_counter() - started
    print(text)
    print(f"test accuracy on real digits, mean ± sample stdev over pipeline seeds; this invocation's wall time {wall:.0f} s")
    path = write_result(args.output, {"settings": vars(args), "machine_at_start": started_machine, "rows": rows, "wall_seconds": wall}, text, command_line())
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
