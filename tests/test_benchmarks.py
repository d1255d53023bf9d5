"""The benchmarks' shared measuring helpers, and the GPU benchmark's code path run on the CPU."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


def _bench_module():
    spec = importlib.util.spec_from_file_location("_bench", BENCHMARKS / "_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_count_flops_counts_multiply_adds_twice():
    bench = _bench_module()
    linear = torch.nn.Linear(10, 20)
    assert bench.count_flops(lambda: linear(torch.zeros(4, 10))) == 2 * 4 * 10 * 20
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert bench.count_flops(lambda: conv(torch.zeros(2, 3, 5, 5))) == 2 * 2 * 5 * 5 * 8 * 3 * 9


def test_matmul_peak_is_a_plausible_rate():
    bench = _bench_module()
    peak = bench.measured_matmul_peak(torch.device("cpu"), torch.float32, sizes=(128,))
    # Any CPU that runs the suite does between 0.1 and 100,000 GFLOP/s on one small matmul.
    assert 1e8 < peak < 1e14


def test_gpu_benchmark_code_runs_on_the_cpu(tmp_path):
    """The CUDA benchmark's own code (synthesis, training, FLOP count, peak) with tiny sizes."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_epoch_bench.py"), "--smoke-cpu"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fraction of peak" in done.stdout
    assert "epoch (median)" in done.stdout


@pytest.mark.parametrize(
    "script",
    [
        "synthesis_bench.py", "cas_epoch_bench.py", "search_bench.py", "search_bench_report.py", "diffusion_order_bench.py",
        "digits_gan_vs_diffusion.py", "robustness_bench.py", "noise_analysis.py",
    ],
)
def test_benchmark_help_explains_itself(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_search_report_refuses_another_benchmarks_results_in_one_line():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "search_bench_report.py"), "synthesis_bench"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "not a search_bench.py results file" in done.stderr and "Traceback" not in done.stderr
