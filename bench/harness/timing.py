"""Timing helpers shared by the benchmark files."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def measure(benchmark, fn: Callable[[], object], rounds: int) -> float | None:
    """Time `fn` for `rounds` rounds (warm-up is the caller's); the median in seconds, None when disabled."""
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    benchmark.extra_info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return benchmark.stats.stats.median if benchmark.enabled and benchmark.stats else None


def run_timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def timed(fn: Callable[[], object]) -> float:
    return run_timed(fn)[1]
