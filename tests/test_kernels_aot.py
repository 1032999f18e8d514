"""The Triton attention kernels compile for A100 (sm_80) and H100 (sm_90) without a GPU (kernels/aot.py).

Each compile runs ptxas from the triton wheel; the cubin gives registers, spills and shared memory. CI
compiles a representative subset (25 kernels: the heaviest kept config of each kernel and dtype at d=64 for
sm_90 and sm_80, and one config known to spill, which proves the spill check can fail); the full grid
(every candidate config x kernel x dtype x head dim x arch, ~860 compiles, tens of minutes on 2 cores) is
`pytest -m slow tests/test_kernels_aot.py`, and `python -m kernels.aot --table ...` writes it as a table.
"""

from __future__ import annotations

import os

import pytest
import torch

from kernels import aot
from kernels import attention as fa


def heaviest_kept(kernel: str, dtype: str, head_d: int, arch: int) -> aot.Case:
    """The kept config with the most accumulator elements per thread: the first to spill if any does."""
    cases = aot.grid([kernel], [dtype], [head_d], [arch], kept_only=True)
    return max(cases, key=lambda c: (max(c.block_m, c.block_n) / c.num_warps, c.num_stages))


CI_CASES = [heaviest_kept(k, t, 64, arch) for arch in aot.ARCHS for k in aot.KERNELS for t in aot.DTYPES]
SPILLS = aot.Case("dkdv", "bf16", 64, 90, 128, 64, 4, 2)  # a dropped candidate: 255 registers and 200 B spilled


@pytest.fixture(scope="module")
def results() -> dict[aot.Case, aot.Result]:
    return {r.case: r for r in aot.compile_cases([*CI_CASES, SPILLS], timeout=600)}


def describe(r: aot.Result) -> str:
    c = r.case
    return f"sm_{c.arch} {c.kernel} {c.dtype} d={c.head_d} {c.config}: " + (
        r.error or f"{r.regs} regs, {r.spill_bytes} B spilled, {r.smem} B smem")


def test_ci_subset_compiles_spill_free_within_shared_memory(results):
    if not torch.cuda.is_available():  # the interpreter is on in this process, and must not reach the compiler
        assert fa.INTERPRETED and os.environ["TRITON_INTERPRET"] == "1"
    for case in CI_CASES:
        r = results[case]
        assert r.kept, describe(r)
        assert r.error is None, describe(r)
        assert r.regs > 0 and r.smem > 0, describe(r)
        assert r.spill_bytes == 0, describe(r)
        assert r.smem <= aot.SMEM_LIMIT[case.arch], describe(r)


def test_a_register_hungry_config_is_seen_to_spill_and_is_dropped(results):
    r = results[SPILLS]
    assert r.error is None and r.spill_bytes > 0 and r.regs == 255 and not r.kept, describe(r)


def test_problems_reports_bad_kept_configs_and_thin_shapes():
    case = aot.Case("dq", "fp16", 64, 80, 128, 64, 4, 2)
    spilled = aot.Result(case, regs=255, spill_bytes=64, smem=1024, kept=True)
    too_big = aot.Result(aot.Case("dq", "fp16", 64, 80, 64, 64, 4, 3), regs=128, smem=200 * 1024, kept=True)
    fine = aot.Result(aot.Case("dq", "fp16", 64, 80, 64, 32, 4, 2), regs=128, smem=1024, kept=True)
    found = aot.problems([spilled, too_big, fine])
    assert len(found) == 3 and "64 B spilled" in found[0] and "204800 B smem" in found[1]
    assert "1 clean kept config(s)" in found[2]
    assert aot.problems([fine, aot.Result(aot.Case("dq", "fp16", 64, 80, 64, 32, 8, 2), kept=True, smem=1)]) == []


def test_every_shape_keeps_at_least_two_candidates():
    for arch in aot.ARCHS:
        for kernel in ("forward", "dkdv", "dq"):
            for dtype in aot.DTYPES:
                for d in aot.HEAD_DIMS:
                    assert len(aot.grid([kernel], [dtype], [d], [arch], kept_only=True)) >= 2, (arch, kernel, dtype, d)


@pytest.mark.slow
def test_full_grid_kept_configs_are_clean_on_both_archs():
    """Every kept config of every kernel, dtype, head dim compiles spill-free within shared memory, >= 2 each."""
    results = aot.compile_cases(aot.grid(), timeout=None)
    assert not any(r.error for r in results), [describe(r) for r in results if r.error]
    # fp32 at d=128: no candidate is spill-free (exact FMA dots), a known gap stated in kernels/attention.py
    assert [p for p in aot.problems(results) if "fp32 d=128" not in p] == []
