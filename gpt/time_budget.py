"""`--time-budget`: a run that ends inside a wall-clock budget on whatever CPU or GPU it meets.

The same iteration count takes ~8 minutes on one 2-core machine and ~15 on another, so a budget is the
portable unit. After a few untimed warm-up steps (compilation, allocator, caches) the loop times
`CALIBRATION_STEPS` steps (their median: a VM's stalls must not shrink the run), takes the measured
evaluation time, and fixes

    max_iters = done + (budget x SAFETY - elapsed - final evaluation) / (step + evaluation / eval_interval)

The cosine schedule then decays over the iterations that fit (warmup is over before the decision only when
warmup_iters is longer than the calibration; the `cpu` preset's 100 are). The decision is saved in
train_state.pt, so `--resume` continues the same schedule bit for bit instead of measuring again.
"""

from __future__ import annotations

import re
import statistics

from gpt.errors import GPTError

WARMUP_STEPS = 5  # the first steps of a run are slower (allocations, caches): not timed
CALIBRATION_STEPS = 20
SAFETY = 0.95  # headroom for timing noise and the last checkpoint write
UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """Seconds in '90s', '8m', '1.5h' or '300' (seconds); a one-line error otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise GPTError(f"--time-budget must be a positive duration such as 90s, 8m or 1h, got {text!r}")
    return float(m.group(1)) * UNITS[m.group(2) or ""]


def plan_iters(budget_s: float, elapsed_s: float, step_s: float, eval_s: float, eval_interval: int,
               done_iters: int, final_s: float) -> int:
    """The iteration count that fits: at least the iterations already done."""
    remaining = budget_s * SAFETY - elapsed_s - final_s
    per_iter = step_s + eval_s / eval_interval
    return max(done_iters, done_iters + int(remaining / per_iter))


def format_duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


class BudgetPlanner:
    """Times the first steps of a run and, once, decides its iteration count (`decide` returns it)."""

    def __init__(self, budget_s: float, started: float, eval_interval: int, final_factor: float,
                 cap: int | None = None):
        self.budget_s, self.started, self.eval_interval = budget_s, started, eval_interval
        self.final_factor = final_factor  # the final evaluation + full val pass, in evaluations
        self.cap = cap
        self.step_times: list[float] = []
        self.eval_s: float | None = None

    def observe_eval(self, seconds: float) -> None:
        self.eval_s = seconds

    def observe_step(self, seconds: float, done_iters: int, now: float, fallback_eval_s: float) -> int | None:
        """Record one step's time; after warm-up + calibration, the planned max_iters (else None)."""
        self.step_times.append(seconds)
        if len(self.step_times) < WARMUP_STEPS + CALIBRATION_STEPS:
            return None
        step_s = statistics.median(self.step_times[WARMUP_STEPS:])  # one stalled step must not cost the run
        eval_s = self.eval_s if self.eval_s is not None else fallback_eval_s
        planned = plan_iters(self.budget_s, now - self.started, step_s, eval_s, self.eval_interval, done_iters,
                             eval_s * self.final_factor)
        self.step_s, self.eval_used_s = step_s, eval_s
        return min(planned, self.cap) if self.cap else planned
