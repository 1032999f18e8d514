"""`--dtype auto`: train in bfloat16 autocast where this machine runs it faster, in float32 elsewhere.

On a GPU bfloat16 is the rule. On a CPU it depends on the chip: bf16 autocast measured 1.3-2x float32 on a
Xeon with AMX, and 19x *slower* on an EPYC VM that exposes no AVX-512 (bf16 emulated). So the CPU's flags say
whether it is worth trying, and a measurement of this run's own training step decides.

A measurement at start-up meets whatever else the machine is doing: a probe that timed float32, then
bfloat16, measured bf16 at 0.43x float32 while another program was busy for the first minute (1.56x on the
same CPU, quiet). So the probe takes turns (`interleaved_medians`: A B A B ..., medians), and once the run
keeps a steady pace `Recheck` lets the two precisions take turns over real training steps and keeps the
faster by the same rule (one line says so when it switches). The choice is saved in train_state.pt: a resume
keeps it instead of measuring again. The loop holds the outcome as a `Precision`: the dtype of each step, and
`Precision.after_step`, the recheck's step hook.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from gpt.model import GPT

BF16_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16"}  # /proc/cpuinfo flag -> what to call it
MIN_SPEEDUP = 1.1  # below this, float32's exactness is worth more than the time saved
PROBE_ROUNDS = 3  # timed (float32, bfloat16) turns of forward+backward, after one untimed turn
RECHECK_PAIRS = 6  # turns of real training steps in each precision once the pace is steady
STEADY_STEPS = 10  # the pace is steady when two runs of this many steps have medians within STEADY_RATIO
STEADY_RATIO = 1.25
CHECK_EVERY = 10  # iterations between the ranks' agreements on the recheck (the same iterations on every rank)


def bf16_hardware(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's native bfloat16 unit ("AMX", "AVX512-BF16"), or None (none, or no /proc/cpuinfo to ask)."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return None
    return next((name for flag, name in BF16_FLAGS.items() if flag in flags), None)


def autocast(device: torch.device, dtype: torch.dtype):
    """The autocast context of a precision (float32: none)."""
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()


def interleaved_medians(candidates: Sequence[Callable[[], None]], rounds: int) -> list[float]:
    """Each candidate's median seconds over `rounds` timed rounds, each round running every candidate in turn
    after one untimed round: a load that comes and goes touches every candidate alike."""
    times: list[list[float]] = [[] for _ in candidates]
    for r in range(rounds + 1):
        for fn, seen in zip(candidates, times, strict=True):
            start = time.perf_counter()
            fn()
            if r:
                seen.append(time.perf_counter() - start)
    return [statistics.median(seen) for seen in times]


def step_fn(model: GPT, x: torch.Tensor, dtype: torch.dtype) -> Callable[[], None]:
    """One forward+backward pass of the model in `dtype` (gradients accumulate: the caller drops them)."""
    def step() -> None:
        with autocast(torch.device("cpu"), dtype):
            _, loss = model(x, x)
        loss.backward()
    return step


def verdict(speedup: float, hardware: str, how: str) -> tuple[torch.dtype, str]:
    """The rule, in one place: bfloat16 when it measured MIN_SPEEDUP x float32 or more."""
    if speedup >= MIN_SPEEDUP:
        return torch.bfloat16, f"bfloat16 autocast ({how} {speedup:.2f}x float32 on this CPU's {hardware})"
    return torch.float32, f"float32 (bfloat16 autocast {how} {speedup:.2f}x float32 on this CPU's {hardware}, " \
                          f"below {MIN_SPEEDUP}x)"


def choose_dtype(model: GPT, batch_size: int, device: torch.device, hardware: str | None
                 ) -> tuple[torch.dtype, str]:
    """The autocast dtype for `--dtype auto` and the reason, for the run's first log line; `hardware` is the
    CPU's bf16_hardware(). The probe leaves the weights, the optimizer and the torch RNG as they were (a run is
    the same whether it probed or not)."""
    if device.type == "cuda":
        return torch.bfloat16, "bfloat16 autocast (CUDA)"
    if hardware is None:
        return torch.float32, "float32 (this CPU has no AMX or AVX512-BF16: bfloat16 would be emulated, slowly)"
    rng = torch.get_rng_state()
    c = model.config
    x = torch.randint(c.vocab_size, (batch_size, c.block_size), generator=torch.Generator().manual_seed(0))
    fp32_s, bf16_s = interleaved_medians([step_fn(model, x, torch.float32), step_fn(model, x, torch.bfloat16)],
                                         PROBE_ROUNDS)
    model.zero_grad(set_to_none=True)
    torch.set_rng_state(rng)
    return verdict(fp32_s / bf16_s, hardware, "measured")


class Recheck:
    """The start-up choice checked again on the run's own steps once its pace is steady: from `begin(it)` on,
    the two precisions take turns for RECHECK_PAIRS pairs of steps, and `result()` is the rule's choice from
    their medians. Only where the probe ran (CPU with a bfloat16 unit, --dtype auto, not a resume)."""

    def __init__(self, chosen: torch.dtype, hardware: str):
        self.chosen, self.hardware = chosen, hardware
        self.other = torch.float32 if chosen == torch.bfloat16 else torch.bfloat16
        self.recent: deque[float] = deque(maxlen=2 * STEADY_STEPS)
        self.start: int | None = None
        self.times: dict[torch.dtype, list[float]] = {torch.float32: [], torch.bfloat16: []}

    def dtype(self, it: int) -> torch.dtype:
        """The precision of iteration `it`: the other one on every second step of the recheck."""
        if self.start is None or it < self.start or self.complete:
            return self.chosen
        return self.other if (it - self.start) % 2 else self.chosen

    def observe(self, it: int, dtype: torch.dtype, seconds: float) -> None:
        if self.start is None:
            self.recent.append(seconds)
        elif it >= self.start and not self.complete:
            self.times[dtype].append(seconds)

    @property
    def steady(self) -> bool:
        if self.start is not None or len(self.recent) < 2 * STEADY_STEPS:
            return False
        recent = list(self.recent)
        a, b = statistics.median(recent[:STEADY_STEPS]), statistics.median(recent[STEADY_STEPS:])
        return max(a, b) / min(a, b) <= STEADY_RATIO

    def begin(self, it: int) -> None:
        self.start = it

    @property
    def complete(self) -> bool:
        return min(len(v) for v in self.times.values()) >= RECHECK_PAIRS

    def result(self) -> tuple[torch.dtype, str]:
        """The precision the rule picks from the recheck's medians, and why."""
        speedup = statistics.median(self.times[torch.float32]) / statistics.median(self.times[torch.bfloat16])
        return verdict(speedup, self.hardware, f"re-measured over {RECHECK_PAIRS} pairs of training steps:")


class Precision:
    """The run's autocast dtype, and the `Recheck` that may still change it (None: the choice is final). `agree`
    gives every rank rank 0's value of its argument: each rank times its own steps, and all train alike."""

    def __init__(self, dtype: torch.dtype, recheck: Recheck | None, agree: Callable[[Any], Any]):
        self.dtype, self.recheck, self.agree = dtype, recheck, agree

    @property
    def name(self) -> str:
        """'bfloat16', as train_state.pt records it."""
        return str(self.dtype).removeprefix("torch.")

    def at(self, it: int) -> torch.dtype:
        """The precision of iteration `it` (during a recheck, the two take turns)."""
        return self.recheck.dtype(it) if self.recheck else self.dtype

    def after_step(self, it: int, dtype: torch.dtype, seconds: float) -> str | None:
        """The recheck's step hook, after iteration `it` ran in `dtype` for `seconds`: every CHECK_EVERY
        iterations the ranks take rank 0's view (its pace steady: the turns begin; the turns done: its verdict).
        Returns the line to print when the verdict is in, else None."""
        if self.recheck is None:
            return None
        self.recheck.observe(it, dtype, seconds)
        done = it + 1
        if done % CHECK_EVERY:
            return None
        steady, result = self.agree((self.recheck.steady, self.recheck.result() if self.recheck.complete else None))
        if steady:
            self.recheck.begin(done)
        if result is None:
            return None
        self.dtype, self.recheck = result[0], None
        return f"precision checked again at iteration {done}: {result[1]}"
