"""`--dtype auto`: train in bfloat16 autocast where this machine runs it faster, in float32 elsewhere.

On a GPU bfloat16 is the rule. On a CPU it depends on the chip: bf16 autocast measured 1.3-2x float32 on a
Xeon with AMX, and 19x *slower* on an EPYC VM that exposes no AVX-512 (bf16 emulated). So the CPU's flags say
whether it is worth trying, and a measurement of this run's own training step decides. The choice is saved
in train_state.pt: a resume keeps it instead of measuring again.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from gpt.model import GPT

BF16_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16"}  # /proc/cpuinfo flag -> what to call it
MIN_SPEEDUP = 1.1  # below this, float32's exactness is worth more than the time saved
PROBE_STEPS = 2  # timed forward+backward steps per dtype, after one untimed warm-up each


def bf16_hardware(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's native bfloat16 unit ("AMX", "AVX512-BF16"), or None (none, or no /proc/cpuinfo to ask)."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return None
    return next((name for flag, name in BF16_FLAGS.items() if flag in flags), None)


def step_seconds(model: GPT, x: torch.Tensor, dtype: torch.dtype) -> float:
    """The fastest of PROBE_STEPS timed forward+backward passes (gradients are dropped afterwards)."""
    amp = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else nullcontext()
    best = math.inf
    for i in range(PROBE_STEPS + 1):
        start = time.perf_counter()
        with amp:
            _, loss = model(x, x)
        loss.backward()
        if i:
            best = min(best, time.perf_counter() - start)
    model.zero_grad(set_to_none=True)
    return best


def choose_dtype(model: GPT, batch_size: int, device: torch.device) -> tuple[torch.dtype, str]:
    """The autocast dtype for `--dtype auto` and the reason, for the run's first log line. The probe leaves
    the weights, the optimizer and the torch RNG as they were (a run is the same whether it probed or not)."""
    if device.type == "cuda":
        return torch.bfloat16, "bfloat16 autocast (CUDA)"
    hardware = bf16_hardware()
    if hardware is None:
        return torch.float32, "float32 (this CPU has no AMX or AVX512-BF16: bfloat16 would be emulated, slowly)"
    rng = torch.get_rng_state()
    c = model.config
    x = torch.randint(c.vocab_size, (batch_size, c.block_size), generator=torch.Generator().manual_seed(0))
    speedup = step_seconds(model, x, torch.float32) / step_seconds(model, x, torch.bfloat16)
    torch.set_rng_state(rng)
    if speedup >= MIN_SPEEDUP:
        return torch.bfloat16, f"bfloat16 autocast (measured {speedup:.2f}x float32 on this CPU's {hardware})"
    return torch.float32, (f"float32 (bfloat16 autocast measured {speedup:.2f}x float32 on this CPU's {hardware}, "
                           f"below {MIN_SPEEDUP}x)")
