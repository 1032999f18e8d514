"""`--time-budget`: a run that ends inside a wall-clock budget on whatever CPU or GPU it meets.

The same iteration count takes ~8 minutes on one 2-core machine and ~15 on another, so a budget is the
portable unit. After a few untimed warm-up steps (compilation, allocator, caches) the loop times
`CALIBRATION_STEPS` steps (their median: a VM's stalls must not shrink the run), takes the measured
evaluation time, and fixes

    max_iters = done + (budget x SAFETY - elapsed - final evaluation) / (step + evaluation / eval_interval)

The schedule (wsd or cosine) then decays over the iterations that fit (warmup is over before the decision only when
warmup_iters is longer than the calibration; the `cpu` preset's 100 are).

Twenty steps are a few seconds, and a shared machine's pace drifts over tens of seconds: on a 2-core VM the
same step took 290 ms for a while and 480 ms for another, so a plan from one such phase overran an 8-minute
budget by 10 %. At each evaluation after the decision the plan is therefore redone from the mean step time
since the decision (`replan`); the schedule then decays over the new count (wsd's flat phase does not
notice; in a decay a re-plan bends the line a little). The latest plan is saved in train_state.pt, so
`--resume` continues that schedule bit for bit instead of measuring again.
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
    """Times the first steps of a run and decides its iteration count (`observe_step` returns it, once); then
    `replan` corrects the count from the pace the run kept."""

    def __init__(self, budget_s: float, started: float, eval_interval: int, final_factor: float,
                 cap: int | None = None):
        self.budget_s, self.started, self.eval_interval = budget_s, started, eval_interval
        self.final_factor = final_factor  # the final evaluation + full val pass, in evaluations
        self.cap = cap
        self.step_times: list[float] = []
        self.eval_s: float | None = None
        self.eval_total_s = 0.0
        self.decided_at: tuple[int, float, float] | None = None  # iteration, time, evaluation seconds until then

    def observe_eval(self, seconds: float) -> None:
        self.eval_s = seconds
        self.eval_total_s += seconds

    def observe_step(self, seconds: float, done_iters: int, now: float, fallback_eval_s: float) -> int | None:
        """Record one step's time; right after warm-up + calibration, the planned max_iters (else None)."""
        if self.decided_at is not None:
            return None
        self.step_times.append(seconds)
        if len(self.step_times) < WARMUP_STEPS + CALIBRATION_STEPS:
            return None
        step_s = statistics.median(self.step_times[WARMUP_STEPS:])  # one stalled step must not cost the run
        eval_s = self.eval_s if self.eval_s is not None else fallback_eval_s
        planned = plan_iters(self.budget_s, now - self.started, step_s, eval_s, self.eval_interval, done_iters,
                             eval_s * self.final_factor)
        self.step_s, self.eval_used_s = step_s, eval_s
        self.decided_at = (done_iters, now, self.eval_total_s)
        return self.capped(planned)

    def replan(self, done_iters: int, now: float) -> int | None:
        """At an evaluation: the iteration count that fits, from the mean step time since the decision (the
        evaluations taken out: each is counted on its own); None before the decision or right at it."""
        if self.decided_at is None or done_iters <= self.decided_at[0]:
            return None
        it, then, evals = self.decided_at
        self.step_s = (now - then - (self.eval_total_s - evals)) / (done_iters - it)
        eval_s = self.eval_used_s if self.eval_s is None else self.eval_s
        # the evaluation about to run here, then the ones amortized per iteration, then the final one
        return self.capped(plan_iters(self.budget_s, now - self.started, self.step_s, eval_s, self.eval_interval,
                                      done_iters, eval_s * (1 + self.final_factor)))

    def capped(self, planned: int) -> int:
        return min(planned, self.cap) if self.cap else planned
