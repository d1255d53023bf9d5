"""What the benchmarks share: the machine they ran on, interleaved timing, one table, one JSON file.

Timings are wall-clock (time.perf_counter). The machine is shared, so variants are run
interleaved (A B A B ...) and medians are reported; a ratio is always between variants
measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def interleaved(variants: dict, repeats: int, sync=lambda: None) -> dict[str, list[float]]:
    """Seconds per call of each variant, measured round-robin: A B C A B C ..."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, call in variants.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def median(values) -> float:
    return statistics.median(values)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells[1:]]
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def write_result(name: str, payload: dict, table_text: str, command: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "command": command,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        **payload,
        "table": table_text,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the error into usage and exit status 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def result_name(text: str) -> str:
    """argparse type: a results file name, written under benchmarks/results/ (no folders)."""
    if not text or "/" in text or text.startswith("."):
        raise argparse.ArgumentTypeError(f"must be a plain file name (written under benchmarks/results/), got {text!r}")
    return text


def count_flops(fn) -> int:
    """FLOPs of one call of `fn` as torch.utils.flop_counter counts them (matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def measured_matmul_peak(device: torch.device, dtype: torch.dtype, sizes=(512, 1024, 2048)) -> float:
    """Best FLOP/s of square matmuls in `dtype` on `device` (at the current torch thread count).

    What the machine's GEMM actually delivers: the ceiling every convolution and linear layer
    of a benchmark is measured against ("% of peak").
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        sync()
        reps = max(3, int(2e10 // (2 * n**3)) if device.type == "cpu" else 20)
        for _ in range(3):  # best of three timed runs: the machine is shared
            start = time.perf_counter()
            for _ in range(reps):
                a @ b
            sync()
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def command_line() -> str:
    return " ".join([".venv/bin/python", *[a if " " not in a else repr(a) for a in sys.argv]])
