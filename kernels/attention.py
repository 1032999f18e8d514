"""Fused causal attention in Triton, FlashAttention-2 style: forward and backward, usable under torch.compile.

    o = softmax(q·kᵀ·scale + causal mask)·v        q: [B, H, Tq, D], k, v: [B, H, Tk, D], Tk >= Tq

Query i sits at key position Tk - Tq + i ("past" = Tk - Tq keys from a KV cache), so it sees keys
j <= i + past. There is **no dropout on the attention probabilities**. Default scale 1/sqrt(D).

Forward (one program per (query block, batch·head)): the [BLOCK_M, D] query tile stays in registers while
[BLOCK_N, D] key/value tiles stream past it. Online softmax keeps, per query row, the running max m and
running sum l of exp(s - m); when a new tile raises the max, the old sum and the output accumulator are
rescaled by exp(m_old - m_new), so the [Tq, Tk] score matrix never exists in memory. Tiles left of the
diagonal need no mask; only the tiles crossing it do (the MASK=True pass). The row's log-sum-exp
lse = m + log(l) is saved for the backward. Exponentials use exp2 with log2(e) folded into the scale.

Backward (FA2): P = exp(s - lse) is recomputed tile by tile from the saved lse instead of being stored.
  1. preprocess: delta_i = rowsum(O ∘ dO)_i                      (= Σ_j P_ij dP_ij)
  2. dK/dV pass, one program per key block, queries streamed:  dV += Pᵀ dO;  dS = P ∘ (dO Vᵀ - delta);
                                                               dK += dSᵀ Q · scale
  3. dQ pass, one program per query block, keys streamed:      dQ += dS K · scale
Two passes avoid atomics: each program owns the rows it writes.

Any T >= 1 (boundary tiles use masked loads), head dims up to 256 (padded to a power of 2 >= 16 with
masks; tested 16-128, the presets use 32 and 64), fp32/fp16/bf16 inputs with fp32 accumulation, and Tq < Tk in forward
and backward. fp32 inputs use exact ("ieee") dots on the GPU rather than TF32.

On a machine without CUDA the kernels run in the Triton interpreter (TRITON_INTERPRET=1, numpy; slow, for
tests) - bf16 is not supported there. On CUDA, block sizes are autotuned; on CPU they are fixed.
Registered as torch.library custom ops (kernels::flash_attn_fwd / kernels::flash_attn_bwd) with fake
impls and an autograd formula, so torch.compile(fullgraph=True) treats them as opaque nodes.
Layout, like the Triton tutorials: kernels, launch configuration, launchers (custom ops), reference below;
benchmark in bench/suite/test_attention_bench.py, tests in tests/test_kernels.py.
"""

from __future__ import annotations

import math
import os
import sys
from collections import Counter
from contextlib import nullcontext

import torch

if not torch.cuda.is_available():  # must precede the first @triton.jit; never forced on a GPU machine
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _interpret_language() -> None:
    """Make triton.language's own @jit helpers (tl.sum, tl.max, tl.zeros, ...) callable by the interpreter.

    They are built when triton.language is first imported; if that happened before TRITON_INTERPRET was
    set (torch.compile imports triton on its first compile, before gpt.model.attention imports this module
    lazily), they are compiled-mode JITFunctions and an interpreted kernel cannot call them. Rebuilding
    them as InterpretedFunctions is a no-op when triton was imported after the variable was set.
    """
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    rebuilt: dict[int, InterpretedFunction] = {}
    for name, mod in list(sys.modules.items()):
        if name == "triton.language" or name.startswith("triton.language."):
            for attr, obj in list(vars(mod).items()):
                if isinstance(obj, JITFunction):
                    setattr(mod, attr, rebuilt.setdefault(id(obj), InterpretedFunction(obj.fn)))


if INTERPRETED:
    _interpret_language()

CALLS: Counter[str] = Counter()  # kernel launches by pass ("forward", "backward"): proof the kernels ran
CPU_BLOCK = 32  # fixed tile size in the interpreter (autotuning needs a GPU driver)


# ---------------------------------------------------------------------------------------------- forward
@triton.jit
def _fwd_inner(acc, m_i, l_i, q, K, V, skt, svt, offs_m, offs_d, lo, hi, TK, past, qk_scale,
               HEAD_D: tl.constexpr, BLOCK_N: tl.constexpr, MASK: tl.constexpr, PREC: tl.constexpr):
    """Stream key/value tiles [lo, hi) past one query tile, updating the online-softmax state."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        ok = (offs_n[:, None] < TK) & (offs_d[None, :] < HEAD_D)  # keys past Tk load as 0 (never NaN garbage)
        k = tl.load(K + offs_n[:, None] * skt + offs_d[None, :], mask=ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale  # log2 units
        if MASK:  # tile crosses the diagonal; also hides keys >= Tk for every real query row
            s = tl.where(offs_n[None, :] <= offs_m[:, None] + past, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: key lo is always visible to every row of the tile
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)  # rescales what was accumulated under the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + offs_n[:, None] * svt + offs_d[None, :], mask=ok, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _fwd_kernel(Q, K, V, Out, LSE, sm_scale, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,
                H, TQ, TK, TQ_BUCKET, HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, PREC: tl.constexpr):
    """One program = one [BLOCK_M, D] query tile of one (batch, head). Head-dim stride must be 1."""
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    Q += b * sqb + h * sqh
    K += b * skb + h * skh
    V += b * svb + h * svh
    Out += b * sob + h * soh
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = (offs_m[:, None] < TQ) & (offs_d[None, :] < HEAD_D)
    q = tl.load(Q + offs_m[:, None] * sqt + offs_d[None, :], mask=row_ok, other=0.0)
    past = TK - TQ
    qk_scale = sm_scale * 1.4426950408889634
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    first = pid_m * BLOCK_M + past  # keys < first are visible to every row of this tile
    mid = first // BLOCK_N * BLOCK_N
    hi = tl.minimum(TK, first + BLOCK_M)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, K, V, skt, svt, offs_m, offs_d, 0, mid, TK, past, qk_scale,
                               HEAD_D, BLOCK_N, False, PREC)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, K, V, skt, svt, offs_m, offs_d, mid, hi, TK, past, qk_scale,
                               HEAD_D, BLOCK_N, True, PREC)
    acc = acc / l_i[:, None]
    tl.store(Out + offs_m[:, None] * sot + offs_d[None, :], acc.to(Out.dtype.element_ty), mask=row_ok)
    lse = (m_i + tl.math.log2(l_i)) * 0.6931471805599453  # natural log, of the scaled scores
    tl.store(LSE + bh * TQ + offs_m, lse, mask=offs_m < TQ)


# --------------------------------------------------------------------------------------------- backward
@triton.jit
def _bwd_preprocess(Out, DO, DELTA, sob, soh, sot, sdb, sdh, sdt, H, TQ, HEAD_D: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta = rowsum(O ∘ dO) in fp32, one [BLOCK_M] slice of rows per program."""
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_m[:, None] < TQ) & (offs_d[None, :] < HEAD_D)
    o = tl.load(Out + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :], mask=ok, other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdt + offs_d[None, :], mask=ok, other=0.0)
    tl.store(DELTA + bh * TQ + offs_m, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=offs_m < TQ)


@triton.jit
def _bwd_dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, sqt, sdt, offs_n, offs_d, lo, hi, TQ, past, qk_scale,
                    HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, MASK: tl.constexpr, PREC: tl.constexpr):
    """Stream query tiles [lo, hi) past one key tile, accumulating its dK and dV (transposed scores)."""
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        ok = (offs_m[:, None] < TQ) & (offs_d[None, :] < HEAD_D)  # padded query rows load as 0: no effect
        q = tl.load(Q + offs_m[:, None] * sqt + offs_d[None, :], mask=ok, other=0.0)
        do = tl.load(DO + offs_m[:, None] * sdt + offs_d[None, :], mask=ok, other=0.0)
        lse2 = tl.load(LSE + offs_m, mask=offs_m < TQ, other=0.0) * 1.4426950408889634
        delta = tl.load(DELTA + offs_m, mask=offs_m < TQ, other=0.0)
        p_t = tl.math.exp2(tl.dot(k, tl.trans(q), input_precision=PREC) * qk_scale - lse2[None, :])  # [N, M]
        if MASK:
            p_t = tl.where(offs_n[:, None] <= offs_m[None, :] + past, p_t, 0.0)
        dv += tl.dot(p_t.to(do.dtype), do, input_precision=PREC)
        dp_t = tl.dot(v, tl.trans(do), input_precision=PREC)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(ds_t.to(q.dtype), q, input_precision=PREC)
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, sm_scale, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                     sdb, sdh, sdt, H, TQ, TK, TQ_BUCKET, HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr):
    """One program = one [BLOCK_N, D] key tile; dK, dV are contiguous like K, V's shape."""
    pid_n, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    Q += b * sqb + h * sqh
    DO += b * sdb + h * sdh
    LSE += bh * TQ
    DELTA += bh * TQ
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_n[:, None] < TK) & (offs_d[None, :] < HEAD_D)
    k = tl.load(K + b * skb + h * skh + offs_n[:, None] * skt + offs_d[None, :], mask=ok, other=0.0)
    v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svt + offs_d[None, :], mask=ok, other=0.0)
    past = TK - TQ
    qk_scale = sm_scale * 1.4426950408889634
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    lo = tl.maximum(pid_n * BLOCK_N - past, 0) // BLOCK_M * BLOCK_M  # first query that sees this tile
    mid = lo + tl.cdiv(tl.maximum(pid_n * BLOCK_N + BLOCK_N - past - lo, 0), BLOCK_M) * BLOCK_M  # rows >= mid see all
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, sqt, sdt, offs_n, offs_d, lo, tl.minimum(mid, TQ), TQ,
                             past, qk_scale, HEAD_D, BLOCK_M, True, PREC)
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, Q, DO, LSE, DELTA, sqt, sdt, offs_n, offs_d, mid, TQ, TQ, past,
                             qk_scale, HEAD_D, BLOCK_M, False, PREC)
    out = bh.to(tl.int64) * TK * HEAD_D + offs_n[:, None] * HEAD_D + offs_d[None, :]
    tl.store(DK + out, (dk * sm_scale).to(DK.dtype.element_ty), mask=ok)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=ok)


@triton.jit
def _bwd_dq_inner(dq, q, do, lse2, delta, K, V, skt, svt, offs_m, offs_d, lo, hi, TK, past, qk_scale,
                  HEAD_D: tl.constexpr, BLOCK_N: tl.constexpr, MASK: tl.constexpr, PREC: tl.constexpr):
    """Stream key/value tiles [lo, hi) past one query tile, accumulating its dQ."""
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        ok = (offs_n[:, None] < TK) & (offs_d[None, :] < HEAD_D)
        k = tl.load(K + offs_n[:, None] * skt + offs_d[None, :], mask=ok, other=0.0)
        v = tl.load(V + offs_n[:, None] * svt + offs_d[None, :], mask=ok, other=0.0)
        p = tl.math.exp2(tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale - lse2[:, None])
        if MASK:
            p = tl.where(offs_n[None, :] <= offs_m[:, None] + past, p, 0.0)
        ds = p * (tl.dot(do, tl.trans(v), input_precision=PREC) - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC)
    return dq


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, DQ, LSE, DELTA, sm_scale, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                   sdb, sdh, sdt, H, TQ, TK, TQ_BUCKET, HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PREC: tl.constexpr):
    """One program = one [BLOCK_M, D] query tile; the same key walk as the forward. dQ is contiguous."""
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    K += b * skb + h * skh
    V += b * svb + h * svh
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_m[:, None] < TQ) & (offs_d[None, :] < HEAD_D)
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=ok, other=0.0)
    do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdt + offs_d[None, :], mask=ok, other=0.0)
    lse2 = tl.load(LSE + bh * TQ + offs_m, mask=offs_m < TQ, other=0.0) * 1.4426950408889634
    delta = tl.load(DELTA + bh * TQ + offs_m, mask=offs_m < TQ, other=0.0)
    past = TK - TQ
    qk_scale = sm_scale * 1.4426950408889634
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    first = pid_m * BLOCK_M + past
    mid = first // BLOCK_N * BLOCK_N
    dq = _bwd_dq_inner(dq, q, do, lse2, delta, K, V, skt, svt, offs_m, offs_d, 0, mid, TK, past, qk_scale,
                       HEAD_D, BLOCK_N, False, PREC)
    dq = _bwd_dq_inner(dq, q, do, lse2, delta, K, V, skt, svt, offs_m, offs_d, mid, tl.minimum(TK, first + BLOCK_M),
                       TK, past, qk_scale, HEAD_D, BLOCK_N, True, PREC)
    out = bh.to(tl.int64) * TQ * HEAD_D + offs_m[:, None] * HEAD_D + offs_d[None, :]
    tl.store(DQ + out, (dq * sm_scale).to(DQ.dtype.element_ty), mask=ok)


# ------------------------------------------------------------------------------------ launch configuration
def _configs(tiles: list[tuple[int, int, int]]) -> list[triton.Config]:
    """(BLOCK_M, BLOCK_N, num_warps) tiles, each with 2 and 3 pipeline stages."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w in tiles for s in (2, 3)]


_TILES = ((32, 32), (64, 32), (64, 64), (128, 32), (128, 64))
CANDIDATE_CONFIGS = _configs([(m, n, w) for m, n in _TILES for w in (4, 8)])
# The candidates each kernel keeps (compiled for sm_90 and sm_80 by `python -m kernels.aot --kept`, table in
# bench/results/kernel-aot-kept.md): spill-free, >= 2 per shape, once `_SPILLS` (below) drops the tiles that spill
# for one arch and head dim; except fp32 at d=128 on sm_90. fp32 uses
# exact FMA dots, which hold far more registers than tensor-core dots: small tiles only, and at d=128 even 32x32
# spills (no candidate is spill-free).
_KEPT = {
    "half": {"forward": [(m, n, w) for m, n in ((64, 32), (64, 64), (128, 32), (128, 64)) for w in (4, 8)
                         if (m, n, w) != (128, 64, 4)],  # 128x64 on 4 warps spills at d=128
             "dkdv": [(64, 32, 8), (128, 32, 8)],  # holds K, V, dK, dV: 128x64 spills even at d=64
             "dq": [(64, 32, 4), (64, 64, 4), (128, 32, 8), (128, 64, 8)]},
    "fp32": {"forward": [(32, 32, 8), (64, 32, 8)], "dkdv": [(32, 32, 8)], "dq": [(32, 32, 8), (64, 32, 8)]},
}
PRE_BLOCK = 64  # rows per program of the backward preprocess on CUDA (one fixed config)


# Kept tiles (M, N, warps) that still spill for one (arch, kernel, precision, head dim), from
# bench/results/kernel-aot-kept.md; each shape keeps >= 2 spill-free configs without them. (sm_90 fp32 at d=128
# has no spill-free candidate at all, so nothing is dropped there.)
_SPILLS = {
    (80, "forward", "half", 128): {(64, 64, 4), (128, 32, 4)},
    (80, "forward", "fp32", 128): {(64, 32, 8)},
    (80, "dkdv", "half", 32): {(128, 32, 8)},
    (80, "dq", "half", 32): {(128, 64, 8)},
    (80, "dq", "half", 128): {(64, 64, 4), (128, 64, 8)},
    (80, "dq", "fp32", 128): {(64, 32, 8)},
    (90, "dkdv", "half", 32): {(128, 32, 8)},
}


def cuda_configs(kernel: str, dtype: str, head_d: int | None = None, arch: int | None = None) -> list[triton.Config]:
    """The autotune candidates kept for kernel ("forward", "dkdv", "dq") and input dtype ("fp16", "bf16", "fp32");
    given the head dim and the GPU's arch (80, 90), without the tiles measured to spill there."""
    precision = "fp32" if dtype == "fp32" else "half"
    spills = _SPILLS.get((arch, kernel, precision, head_d), set())
    return _configs([t for t in _KEPT[precision][kernel] if t not in spills])


def _prune(kernel: str):
    """early_config_prune for one kernel's autotuner: the kept candidates for the inputs' dtype, head dim and GPU."""
    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}

    def prune(configs: list[triton.Config], named_args: dict, **meta) -> list[triton.Config]:
        q = named_args["Q"]
        major, minor = torch.cuda.get_device_capability(q.device)
        kept = {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
                for c in cuda_configs(kernel, names[q.dtype], meta.get("HEAD_D"), 10 * major + minor)}
        return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in kept]

    return prune


_KEY = ["TQ_BUCKET", "HEAD_D", "PREC"]  # bucketed Tq: a growing KV cache must not re-tune every step
if INTERPRETED:
    _FWD, _DKDV, _DQ = _fwd_kernel, _bwd_dkdv_kernel, _bwd_dq_kernel
    _FIXED = {"BLOCK_M": CPU_BLOCK, "BLOCK_N": CPU_BLOCK}
else:
    _FWD, _DKDV, _DQ = (
        triton.autotune(CANDIDATE_CONFIGS, key=_KEY, prune_configs_by={"early_config_prune": _prune(name)})(kernel)
        for name, kernel in (("forward", _fwd_kernel), ("dkdv", _bwd_dkdv_kernel), ("dq", _bwd_dq_kernel)))
    _FIXED = {}


def _meta(q: torch.Tensor) -> dict:
    """Compile-time parameters shared by all passes: padded head dim and dot precision."""
    d = q.size(-1)
    return {"HEAD_D": d, "BLOCK_D": max(16, triton.next_power_of_2(d)),
            "PREC": "ieee" if q.dtype == torch.float32 else "tf32", **_FIXED}


def _rows(t: torch.Tensor) -> torch.Tensor:
    """The kernels index the head dim with stride 1 (other strides are passed, so views are fine)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _s3(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _bucket(t: int) -> int:
    return min(triton.next_power_of_2(t), 1024)


# ------------------------------------------------------------------------------------------------ launchers
@torch.library.custom_op("kernels::flash_attn_fwd", mutates_args=())
def flash_attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (o [B, H, Tq, D] in q's dtype, lse [B, H, Tq] fp32, natural log of the scaled scores)."""
    q, k, v = _rows(q), _rows(k), _rows(v)
    B, H, TQ, D = q.shape
    TK = k.size(2)
    o = q.new_empty(B, H, TQ, D)
    lse = q.new_empty(B, H, TQ, dtype=torch.float32)
    grid = lambda m: (triton.cdiv(TQ, m["BLOCK_M"]), B * H)  # noqa: E731
    with torch.cuda.device(q.device) if q.is_cuda else nullcontext():
        _FWD[grid](q, k, v, o, lse, scale, *_s3(q), *_s3(k), *_s3(v), *_s3(o), H, TQ, TK, _bucket(TQ), **_meta(q))
    CALLS["forward"] += 1
    return o, lse


@flash_attn_fwd.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, H, TQ, D = q.shape
    return q.new_empty(B, H, TQ, D), q.new_empty(B, H, TQ, dtype=torch.float32)


@torch.library.custom_op("kernels::flash_attn_bwd", mutates_args=())
def flash_attn_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                   lse: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (dq, dk, dv), contiguous, in the inputs' dtype."""
    do, q, k, v, o = (_rows(t) for t in (do, q, k, v, o))
    B, H, TQ, D = q.shape
    TK = k.size(2)
    meta = _meta(q)
    delta = torch.empty(B, H, TQ, device=q.device, dtype=torch.float32)
    dq, dk, dv = q.new_empty(B, H, TQ, D), k.new_empty(B, H, TK, D), v.new_empty(B, H, TK, D)
    strides = (*_s3(q), *_s3(k), *_s3(v), *_s3(do))
    with torch.cuda.device(q.device) if q.is_cuda else nullcontext():
        pre = PRE_BLOCK if q.is_cuda else CPU_BLOCK
        _bwd_preprocess[(triton.cdiv(TQ, pre), B * H)](o, do, delta, *_s3(o), *_s3(do), H, TQ, HEAD_D=D,
                                                        BLOCK_D=meta["BLOCK_D"], BLOCK_M=pre)
        _DKDV[lambda m: (triton.cdiv(TK, m["BLOCK_N"]), B * H)](q, k, v, do, dk, dv, lse, delta, scale, *strides,
                                                                H, TQ, TK, _bucket(TQ), **meta)
        _DQ[lambda m: (triton.cdiv(TQ, m["BLOCK_M"]), B * H)](q, k, v, do, dq, lse, delta, scale, *strides,
                                                              H, TQ, TK, _bucket(TQ), **meta)
    CALLS["backward"] += 1
    return dq, dk, dv


@flash_attn_bwd.register_fake
def _(do, q, k, v, o, lse, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, do: torch.Tensor, _dlse: torch.Tensor | None):
    q, k, v, o, lse = ctx.saved_tensors
    dq, dk, dv = flash_attn_bwd(do, q, k, v, o, lse, ctx.scale)
    return dq, dk, dv, None


flash_attn_fwd.register_autograd(_backward, setup_context=_setup_context)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Causal attention, no dropout. q: [B, H, Tq, D]; k, v: [B, H, Tk, D], Tk >= Tq (query i at key Tk - Tq + i).

    Returns [B, H, Tq, D] in q's dtype; differentiable in q, k and v. scale defaults to 1/sqrt(D).
    """
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4 or q.shape[:2] != k.shape[:2] or q.size(3) != k.size(3):
        raise ValueError(f"expected q [B, H, Tq, D] and k, v [B, H, Tk, D]; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if not q.dtype == k.dtype == v.dtype or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"q, k, v must share one dtype of fp32/fp16/bf16; got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.size(2) < q.size(2) or q.size(2) < 1:
        raise ValueError(f"need 1 <= Tq <= Tk, got Tq={q.size(2)}, Tk={k.size(2)}")
    if q.size(3) > 256:
        raise ValueError(f"head dim {q.size(3)} > 256 is not supported")
    return flash_attn_fwd(q, k, v, 1.0 / math.sqrt(q.size(-1)) if scale is None else float(scale))[0]


# ------------------------------------------------------------------------------------------------ reference
def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Naive causal attention with the same offset convention, computed in fp32 (for tests and benchmarks)."""
    tq, tk = q.size(-2), k.size(-2)
    s = (q.float() @ k.float().transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)) if scale is None else scale)
    i = torch.arange(tq, device=q.device)[:, None] + (tk - tq)
    s = s.masked_fill(torch.arange(tk, device=q.device)[None, :] > i, float("-inf"))
    return (torch.softmax(s, -1) @ v.float()).to(q.dtype)
