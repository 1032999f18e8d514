"""Ahead-of-time compilation of the Triton attention kernels for sm_80 (A100) and sm_90 (H100), no GPU needed.

`triton.compile` needs no driver when given a target: it lowers a kernel to PTX and runs the `ptxas` shipped in
the triton wheel, which gives the cubin whose registers, stack (spills) and static shared memory `cuobjdump`
(also shipped) reports. Triton's own `compiled.n_regs`/`n_spills` only exist after loading on a GPU.

    python -m kernels.aot --table FILE          # every candidate config, every shape, both archs (hours on 2 cores)
    python -m kernels.aot --kept --table FILE   # the configs the autotuner keeps (bench/results/kernel-aot-kept.md)

Compilation always runs in a subprocess (`python -m kernels.aot --worker`) with TRITON_INTERPRET=0: in a
process without CUDA, `kernels.attention` turns the interpreter on at import (tests/test_kernels.py relies
on that), and interpreted kernels cannot be compiled. Results come from Triton's on-disk cache when the
kernel source is unchanged, so a second run of the full grid takes seconds instead of tens of minutes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

KERNELS = ("forward", "preprocess", "dkdv", "dq")  # preprocess: the backward's delta = rowsum(O ∘ dO)
DTYPES = ("fp16", "bf16", "fp32")
HEAD_DIMS = (32, 64, 128)
ARCHS = (90, 80)
SMEM_LIMIT = {80: 163 * 1024, 90: 227 * 1024}  # opt-in shared memory per block: A100, H100
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One kernel compiled for one shape, launch config and architecture."""

    kernel: str
    dtype: str
    head_d: int
    arch: int
    block_m: int
    block_n: int  # 0 for the preprocess kernel, which has no key tile
    num_warps: int
    num_stages: int

    @property
    def config(self) -> str:
        tile = f"{self.block_m}" if self.kernel == "preprocess" else f"{self.block_m}x{self.block_n}"
        return f"{tile} w{self.num_warps} s{self.num_stages}"


@dataclass(frozen=True)
class Result:
    case: Case
    regs: int = 0  # per thread
    spill_bytes: int = 0  # per-thread stack frame: local memory that spilled registers live in
    smem: int = 0  # bytes per block: Triton's dynamic shared memory + the cubin's static shared memory
    kept: bool = False  # in the autotune list kernels.attention uses for this dtype and head dim
    error: str | None = None

    @property
    def clean(self) -> bool:
        """Compiles, spills nothing and fits the architecture's shared memory."""
        return self.error is None and self.spill_bytes == 0 and self.smem <= SMEM_LIMIT[self.case.arch]


def grid(kernels: Iterable[str] = KERNELS, dtypes: Iterable[str] = DTYPES, head_dims: Iterable[int] = HEAD_DIMS,
         archs: Iterable[int] = ARCHS, kept_only: bool = False) -> list[Case]:
    """Every autotune candidate (or only the kept ones) of every kernel for every shape and architecture."""
    from kernels import attention as fa

    cases = []
    for arch, kernel, dtype, d in itertools.product(archs, kernels, dtypes, head_dims):
        if kernel == "preprocess":  # launched with one fixed config
            cases.append(Case(kernel, dtype, d, arch, fa.PRE_BLOCK, 0, 4, 3))
            continue
        configs = fa.cuda_configs(kernel, dtype, d, arch) if kept_only else fa.CANDIDATE_CONFIGS
        cases += [Case(kernel, dtype, d, arch, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
                  for c in configs]
    return cases


def is_kept(case: Case) -> bool:
    from kernels import attention as fa

    if case.kernel == "preprocess":
        return True
    return any((c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
               == (case.block_m, case.block_n, case.num_warps, case.num_stages)
               for c in fa.cuda_configs(case.kernel, case.dtype, case.head_d, case.arch))


def compile_cases(cases: Sequence[Case], timeout: float | None = None,
                  progress: Callable[[Result], None] | None = None) -> list[Result]:
    """Compile each case in one `--worker` subprocess (sequentially: one core's worth of work at a time)."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(ROOT)}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9's default, stated to silence its warning
    results = []
    with tempfile.TemporaryFile("w+") as log, subprocess.Popen(
            [sys.executable, "-m", "kernels.aot", "--worker"], cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log) as proc:
        proc.stdin.write(json.dumps([asdict(c) for c in cases]))  # the worker reads it all before it writes
        proc.stdin.close()
        for line in proc.stdout:  # streamed: the full grid takes tens of minutes without a warm cache
            fields = json.loads(line)
            case = Case(**fields.pop("case"))
            results.append(Result(case, kept=is_kept(case), **fields))
            if progress:
                progress(results[-1])
        if proc.wait(timeout) or len(results) != len(cases):
            log.seek(0)
            raise RuntimeError(f"kernels.aot worker failed (exit {proc.returncode}):\n{log.read()[-4000:]}")
    return results


# ---------------------------------------------------------------------------------------------- worker
def _signature(fn, dtype: str, constexprs: dict) -> tuple[dict[str, str], dict]:
    """Argument types and the divisibility hints the JIT would derive at a training launch.

    Pointers from torch allocations are 16-byte aligned and every stride is a multiple of the head dim
    (>= 16), so both get tt.divisibility=16; H and the sequence lengths get no hint.
    """
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
        elif name == "sm_scale":
            signature[name] = "fp32"
        elif name in ("H", "TQ", "TK", "TQ_BUCKET"):
            signature[name] = "i32"
        else:
            is_stride = re.fullmatch(r"s[a-z]{2}", name) is not None
            signature[name] = "i32" if is_stride else "*fp32" if name in ("LSE", "DELTA") else f"*{dtype}"
            attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, attrs


def _compile(case: Case) -> Result:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kernels import attention as fa

    fn = {"forward": fa._fwd_kernel, "preprocess": fa._bwd_preprocess, "dkdv": fa._bwd_dkdv_kernel,
          "dq": fa._bwd_dq_kernel}[case.kernel]
    constexprs = {"HEAD_D": case.head_d, "BLOCK_D": case.head_d, "BLOCK_M": case.block_m}
    if case.kernel != "preprocess":
        constexprs |= {"BLOCK_N": case.block_n, "PREC": "ieee" if case.dtype == "fp32" else "tf32"}
    signature, attrs = _signature(fn, case.dtype, constexprs)
    try:
        compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", case.arch, 32),
                                  options={"num_warps": case.num_warps, "num_stages": case.num_stages})
    except Exception as e:  # a compiler error is a result to report, not a crash of the whole grid
        return Result(case, error=f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
    usage = _resource_usage(compiled.asm["cubin"], fn.__name__)
    return Result(case, regs=usage["REG"], spill_bytes=usage["STACK"], smem=compiled.metadata.shared + usage["SHARED"])


def _resource_usage(cubin: bytes, name: str) -> dict[str, int]:
    """`cuobjdump --dump-resource-usage` of one function: REG, STACK, SHARED (static), LOCAL, ..."""
    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-resource-usage", f.name], check=True,
                             capture_output=True, text=True).stdout
    line = out.split(f"Function {name}:", 1)[1].split("\n", 2)[1]
    return {k: int(v) for k, v in re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line)}


def _worker() -> None:
    """Read cases (JSON) from stdin; write one JSON result per line as each compile finishes."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("kernels.aot --worker needs TRITON_INTERPRET unset or 0")
    for fields in json.load(sys.stdin):
        result = asdict(_compile(Case(**fields)))
        result.pop("kept")
        print(json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------- report
def _kb(n: int) -> str:
    return f"{n / 1024:.0f}"


def table(results: Sequence[Result]) -> str:
    """Markdown: one row per (arch, kernel, dtype, head dim, config), plus a summary of what was dropped."""
    lines = ["| arch | kernel | dtype | d | config (M×N, warps, stages) | regs | spill B | smem KB | kept |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r.case
        status = ("compile error" if r.error else "yes" if r.kept and r.clean
                  else "**kept but spills/too much smem**" if r.kept else "no")
        lines.append(f"| sm_{c.arch} | {c.kernel} | {c.dtype} | {c.head_d} | {c.config} | {r.regs} | "
                     f"{r.spill_bytes} | {_kb(r.smem)} | {status} |")
    return "\n".join(lines) + "\n"


def problems(results: Sequence[Result]) -> list[str]:
    """Kept configs that fail, and (kernel, dtype, head dim, arch) with fewer than two clean kept configs."""
    bad = [f"sm_{r.case.arch} {r.case.kernel} {r.case.dtype} d={r.case.head_d} {r.case.config}: "
           + (r.error or f"{r.spill_bytes} B spilled, {r.smem} B smem") for r in results if r.kept and not r.clean]
    by_shape: dict[tuple, int] = {}
    for r in results:
        if r.case.kernel != "preprocess":
            key = (r.case.arch, r.case.kernel, r.case.dtype, r.case.head_d)
            by_shape[key] = by_shape.get(key, 0) + (r.kept and r.clean)
    bad += [f"sm_{a} {k} {t} d={d}: {n} clean kept config(s), need >= 2" for (a, k, t, d), n in by_shape.items()
            if n < 2]
    return bad


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kernels.aot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, help="write the Markdown table of every config here")
    p.add_argument("--arch", type=int, action="append", choices=ARCHS, help="only this arch (repeatable)")
    p.add_argument("--kept", action="store_true",
                   help="only the configs the autotuner keeps (the full grid's spilling candidates take ptxas "
                        "minutes each on 2 cores)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        _worker()
        return 0
    cases = grid(archs=args.arch or ARCHS, kept_only=args.kept)
    start = time.perf_counter()

    def progress(r: Result) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] sm_{r.case.arch} {r.case.kernel} {r.case.dtype} "
              f"d={r.case.head_d} {r.case.config}: {r.error or f'{r.regs} regs, {r.spill_bytes} B spill'}",
              file=sys.stderr)

    results = compile_cases(cases, progress=progress)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(table(results))
    bad = problems(results)
    dropped = sum(not r.kept for r in results)
    print(f"{len(results)} compiles, {dropped} configs not kept, {len(bad)} problem(s)"
          + "".join(f"\n  {b}" for b in bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
