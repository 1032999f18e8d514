"""What the benchmarks measure and the arithmetic behind "% of the hardware limit", shared by the pytest
benchmarks (bench/test_*.py) and the report (bench/report.py). Torch-free, so the report runs anywhere.

Sizes have two settings: the real one (`make bench`) and a smoke one (`--bench-smoke` or BENCH_SMOKE=1:
a 2-layer, 32-wide model, a handful of tokens, one round) that CI runs with `--benchmark-disable` to keep
every benchmark working.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------------------------- backends

DECODE_BACKENDS = ("eager-nocache", "eager-kv", "compiled-kv", "ort-onnx-fp32", "ort-fp32", "ort-int8", "ort-int4",
                   "genai-fp32", "genai-loop")
BACKEND_LABELS = {
    "eager-nocache": "PyTorch eager, no cache (nanoGPT)",
    "eager-kv": "PyTorch eager, KV cache",
    "compiled-kv": "torch.compile, KV cache",
    "ort-onnx-fp32": "onnxruntime fp32, portable layout (opset-23 Attention, concat cache)",
    "ort-fp32": "onnxruntime fp32 (gqa layout, in-place cache)",
    "ort-int8": "onnxruntime int8 (gqa, dynamic int8)",
    "ort-int4": "onnxruntime int4 (gqa, MatMulNBits 4-bit, int8 compute)",
    "genai-fp32": "onnxruntime-genai engine, our loop (same fp32 file)",
    "genai-loop": "onnxruntime-genai's own C++ loop (same fp32 file)",
}
BATCH1_ONLY = ("genai-fp32", "genai-loop")  # onnxruntime-genai appends tokens to a batch only through its search
BASELINE = "eager-nocache"
KV_BASELINE = "eager-kv"

# Training variants: (name, description). The first is the baseline of the "x vs eager" column.
TRAIN_VARIANTS = {
    "eager": "eager, foreach AdamW",
    "compile": "torch.compile(model), as gpt.train --compile",
    "compile-fbrand": "torch.compile(model), dropout masks from ATen (inductor fallback_random)",
    "compile-maxat": "torch.compile(model, mode='max-autotune-no-cudagraphs')",
    "compile-step": "torch.compile(model) + compiled clip-grad + AdamW step",
    "eager-bf16": "eager, bf16 autocast (AMX on CPUs that have it)",
    "compile-bf16": "torch.compile(model), bf16 autocast",
}
DEFAULT_TRAIN_VARIANTS = ("eager", "compile", "eager-bf16")
# Ops torch.compile leaves to ATen on CPU in training (inductor's C++ GEMM template needs constant, i.e. frozen,
# weights): their share of an eager step bounds what compiling can save (Amdahl).
EXTERN_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward")

# ------------------------------------------------------------------------------------------------ sizes

DEFAULT_PRESETS = ("cpu", "shakespeare")
SMOKE_PRESET = "smoke"
PROMPT_LEN = 64
NEW_TOKENS = (256, 500)
BATCHES = (1, 8)
# Training batch per preset (tokens per step = batch x block_size). shakespeare's nanoGPT batch is 64; 8 keeps a
# CPU step near a second.
TRAIN_BATCH = {"cpu": 32, "shakespeare": 8, "large": 4, SMOKE_PRESET: 4}
DRAM_BYTES = 2 << 30  # 2 GiB float32 array: far larger than any cache (the VM reports a 480 MiB L3)
MATMUL_N = 4096


@dataclass(frozen=True)
class Sizes:
    smoke: bool
    prompt_len: int
    new_tokens: tuple[int, ...]
    batches: tuple[int, ...]
    budget_s: float  # target timed seconds per benchmark (rounds = budget / one run, clamped)
    min_rounds: int
    max_rounds: int
    dram_bytes: int
    matmul_n: int


def sizes(smoke: bool) -> Sizes:
    if smoke:
        return Sizes(True, 16, (24,), BATCHES, 0.0, 1, 1, 64 << 20, 256)
    return Sizes(False, PROMPT_LEN, NEW_TOKENS, BATCHES, 2.0, 3, 15, DRAM_BYTES, MATMUL_N)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def rounds_for(seconds_per_run: float, s: Sizes, min_rounds: int | None = None) -> int:
    """Enough rounds to fill the time budget, at least min_rounds, at most max_rounds."""
    lo = s.min_rounds if min_rounds is None else min_rounds
    if s.smoke:
        return 1
    return max(lo, min(s.max_rounds, int(s.budget_s / max(seconds_per_run, 1e-9))))


# ------------------------------------------------------------------------------------ the limit model


def decode_calls(prompt_len: int, new_tokens: int, block_size: int) -> list[tuple[int, int]]:
    """(tokens fed, keys attended) of every forward call gpt.decode.loop.generate makes: one prefill, then a
    step per token, and a re-prefill of the last block_size // 2 tokens whenever the window overflows."""
    window = min(prompt_len, block_size)
    calls = [(window, window)]
    for _ in range(new_tokens - 1):
        window += 1
        if window > block_size:
            window = block_size // 2
            calls.append((window, window))
        else:
            calls.append((1, window))
    return calls


def average_context(prompt_len: int, new_tokens: int, block_size: int) -> float:
    """Mean number of cached positions a decode call reads (keys attended), over the whole run."""
    calls = decode_calls(prompt_len, new_tokens, block_size)
    return sum(k for _, k in calls) / len(calls)


def kv_bytes(n_layer: int, n_embd: int, context: float, dtype_bytes: int = 4) -> float:
    """Keys + values of every layer for `context` positions of one sequence."""
    return 2 * n_layer * n_embd * context * dtype_bytes


def decode_bytes_per_call(weight_bytes: int, n_layer: int, n_embd: int, batch: int, context: float) -> float:
    """Bytes a memory-bound decoder must read per forward call: the weights once (shared by the whole batch)
    plus each sequence's KV cache at the run's average context."""
    return weight_bytes + batch * kv_bytes(n_layer, n_embd, context)


def memory_bound_tokens_per_s(bytes_per_call: float, batch: int, bandwidth_bytes_s: float) -> float:
    return batch * bandwidth_bytes_s / bytes_per_call


def matmul_params(n_layer: int, n_embd: int, vocab_size: int) -> int:
    """Weights that take part in matmuls per token: 4 linears per block (12·C²) + the vocabulary head."""
    return n_layer * 12 * n_embd * n_embd + vocab_size * n_embd


def forward_flops(n_layer: int, n_embd: int, vocab_size: int, tokens: int, seq_len: int) -> float:
    """Forward FLOPs for `tokens` tokens in sequences of `seq_len`: 2·N per token + causal attention
    (q·kᵀ and p·v, 2·2·T·C per token, halved by the mask)."""
    return 2 * matmul_params(n_layer, n_embd, vocab_size) * tokens + 2 * n_layer * seq_len * n_embd * tokens


def train_flops(n_layer: int, n_embd: int, vocab_size: int, tokens: int, seq_len: int) -> float:
    """Forward + backward = 3 x forward."""
    return 3 * forward_flops(n_layer, n_embd, vocab_size, tokens, seq_len)


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "onnxruntime", "onnx", "onnxscript", "numpy", "pytest-benchmark"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
