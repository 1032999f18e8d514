"""The hardware limits, measured in the same run as the model benchmarks (same threads).

- Read bandwidth: torch.sum over a float32 array, from L2-sized to DRAM-sized (2 GiB, far past any cache).
  A decode step reads its weights and KV cache once, so bytes ÷ bandwidth is its floor; the report uses the
  DRAM figure and the figure at the step's own working set (weights that fit in cache are read faster).
- Peak matmul FLOP/s: a large torch.mm, fp32 and bf16 (AMX on CPUs that have it), on the CPU (and the GPU if any).
"""

from __future__ import annotations

import pytest
import torch

from bench.harness import plan
from bench.harness.timing import measure, timed

MIB = 1 << 20
READ_SIZES_MIB = (1, 4, 16, 64, 256)


def read_sizes(s: plan.Sizes) -> list[int]:
    if s.smoke:
        return [MIB, s.dram_bytes]
    return [m * MIB for m in READ_SIZES_MIB] + [s.dram_bytes]


def pytest_generate_tests(metafunc):
    if "read_bytes" in metafunc.fixturenames:
        s = plan.sizes(metafunc.config.getoption("--bench-smoke"))
        sizes = read_sizes(s)
        metafunc.parametrize("read_bytes", sizes, ids=[f"{b // MIB}MiB" for b in sizes])


def test_read_bandwidth(benchmark, threads, bench_sizes, read_bytes):
    a = torch.ones(read_bytes // 4, dtype=torch.float32)
    a.sum()  # touch every page
    one = timed(a.sum)
    iterations = max(1, int(0.02 / max(one, 1e-9)))  # keep each timed round above ~20 ms
    rounds = 1 if bench_sizes.smoke else max(10, min(200, int(1.0 / max(one * iterations, 1e-9))))
    benchmark.group = "hardware: read bandwidth (torch.sum, float32)"
    benchmark.extra_info.update(kind="read_bandwidth", bytes=read_bytes, threads=threads,
                                dram=read_bytes >= bench_sizes.dram_bytes)
    benchmark.pedantic(a.sum, rounds=rounds, iterations=iterations, warmup_rounds=1)
    if benchmark.enabled and benchmark.stats:
        benchmark.extra_info["gb_per_s"] = round(read_bytes / benchmark.stats.stats.median / 1e9, 2)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_matmul_peak(benchmark, threads, bench_sizes, device, dtype):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    n = bench_sizes.matmul_n
    a, b = (torch.randn(n, n, device=device).to(getattr(torch, dtype)) for _ in range(2))

    def mm():
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()

    mm()
    # One round when a single product is slow: bf16 without AMX/AVX512-BF16 kernels took minutes per call on
    # the AMD EPYC of 2026-11-25 (its peak is then a finding, not a figure worth four minutes more).
    rounds = plan.rounds_for(timed(mm), bench_sizes, min_rounds=1)
    benchmark.group = f"hardware: peak matmul ({n}x{n} torch.mm)"
    benchmark.extra_info.update(kind="matmul_peak", dtype=dtype, n=n, flops=2 * n**3, threads=threads,
                                device=device)
    median = measure(benchmark, mm, rounds)
    if median:
        benchmark.extra_info["gflop_per_s"] = round(2 * n**3 / median / 1e9, 1)
