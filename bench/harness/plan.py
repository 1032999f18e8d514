"""What the benchmarks measure and how much of it: the decode backends and their labels, the training variants,
the presets and sizes (a real setting for `make bench`, a smoke one for `--bench-smoke` or BENCH_SMOKE=1: a
2-layer, 32-wide model, a handful of tokens, one round, which CI runs with `--benchmark-disable` to keep every
benchmark working) and the rounds a time budget allows. Shared by the suite (bench/suite/) and the reports
(bench/reports/); torch-free, so the reports run anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

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

# The serving benchmarks' requests (bench.serving, bench.cluster) sample at this temperature.
SERVING_TEMPERATURE = 0.8

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


def rounds_for(seconds_per_run: float, s: Sizes, min_rounds: int | None = None) -> int:
    """Enough rounds to fill the time budget, at least min_rounds, at most max_rounds."""
    lo = s.min_rounds if min_rounds is None else min_rounds
    if s.smoke:
        return 1
    return max(lo, min(s.max_rounds, int(s.budget_s / max(seconds_per_run, 1e-9))))
