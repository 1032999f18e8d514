"""`--time-budget`: a deadline the training loop keeps, on whatever machine and whatever else runs on it.

The same iteration count takes ~8 minutes on one 2-core machine and ~15 on another, and on one machine a
step's pace moves with what else runs: with other programs busy for the first minute, 20 calibration steps
took 3.6 s each where the quiet pace was 0.24 s, and a plan made from them once stopped the run 2 minutes
into its 8. So no start-up measurement decides. Every `REPLAN_EVERY` iterations the planner estimates again
the iteration count that fits, from the pace of the recent past (the steps of the last `WINDOW_SHARE` of the
budget, at least `MIN_WINDOW_STEPS` of them; a step over `STALL` times the window's median counts as that
much, since a one-off stall is paid for already and says nothing of the steps to come, while a slower
phase soon is the median), and the count grows as readily as it shrinks:

    max_iters = done + (budget x SAFETY - elapsed - final) / (step + evaluation / eval_interval)

An evaluation's cost is kept in steps (its seconds over the pace when it ran), so it follows the pace as well,
but never counts more than `EVAL_SLOWDOWN` x its last measured seconds: with two other programs spinning on
a 2-core VM the training step slowed 7x and an evaluation (forward passes only) far less, and a reserve
scaled with the steps ended that run at 93 % of its budget. `final` is the last evaluation and the full val
pass. An evaluation that would eat into the time the final one needs is skipped (`eval_fits`). The schedule
follows the plan through `Progress` (gpt/train/schedule.py): a re-plan bends the learning-rate line, never jumps.

The loop talks to a `Plan`, whatever decides the run's length (max_iters, a resumed plan, or a `Deadline`): it
iterates over `Plan.iterations`, and `Plan.after_step` is the budget's step hook (the step's seconds to the pace,
a re-plan every REPLAN_EVERY iterations, the line that says what the plan became).

The latest plan and progress are saved in train_state.pt: `--resume` finishes that plan without re-planning
(a resumed run has no deadline of its own; its schedule continues bit for bit).
"""

from __future__ import annotations

import re
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from gpt.config import TrainConfig
from gpt.errors import GPTError
from gpt.train.schedule import Progress, lr_at

WARMUP_STEPS = 5  # the first steps of a run are slower (allocations, caches): not timed
MIN_WINDOW_STEPS = 10  # the pace is a mean over at least this many steps...
WINDOW_SHARE = 0.05  # ...and over the steps of the last 5 % of the budget (24 s of 8 minutes)
REPLAN_EVERY = 10  # iterations between plans (the same iterations on every DDP rank)
STALL = 3.0  # a step counts at most this many times the window's median in the pace
EVAL_SLOWDOWN = 1.5  # an evaluation is budgeted at most this many times its last measured seconds
PACE_CHANGE = 1.5  # a pace this much faster or slower than the one last reported gets a line
SAFETY = 0.98  # headroom for the checkpoint writes and the noise of the last steps
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


class Deadline:
    """The run's pace over a sliding window of steps, and the iteration count that ends the run on time.

    `eval_steps` is a first guess of an evaluation's cost in steps, replaced by each evaluation measured;
    `final_evals` is the end of the run (last evaluation + full val pass) in evaluations."""

    def __init__(self, budget_s: float, started: float, eval_interval: int, eval_steps: float,
                 final_evals: float, cap: int | None = None):
        self.budget_s, self.started, self.eval_interval = budget_s, started, eval_interval
        self.eval_steps, self.final_evals, self.cap = eval_steps, final_evals, cap
        self.window_s = budget_s * WINDOW_SHARE
        self.window: deque[float] = deque()
        self.window_total = 0.0
        self.steps_seen = 0
        self.unscaled_eval_s: float | None = None  # an evaluation timed before any pace was known
        self.last_eval_s: float | None = None
        self.reported_pace: float | None = None

    @property
    def pace(self) -> float | None:
        """Seconds per step over the window, stalls capped; None until the window holds MIN_WINDOW_STEPS steps."""
        if len(self.window) < MIN_WINDOW_STEPS:
            return None
        cap = STALL * statistics.median(self.window)
        return sum(min(s, cap) for s in self.window) / len(self.window)

    def observe_step(self, seconds: float) -> None:
        self.steps_seen += 1
        if self.steps_seen <= WARMUP_STEPS:
            return
        self.window.append(seconds)
        self.window_total += seconds
        while len(self.window) > MIN_WINDOW_STEPS and self.window_total - self.window[0] >= self.window_s:
            self.window_total -= self.window.popleft()
        if self.unscaled_eval_s is not None and (pace := self.pace) is not None:  # the first pace: now in steps
            self.eval_steps, self.unscaled_eval_s = max(self.eval_steps, self.unscaled_eval_s / pace), None

    def observe_eval(self, seconds: float) -> None:
        """An evaluation's seconds, kept in steps of the pace it ran at (it slows and speeds up with them)."""
        self.last_eval_s = seconds
        if self.pace is None:
            self.unscaled_eval_s = seconds
        else:
            self.eval_steps, self.unscaled_eval_s = seconds / self.pace, None

    def plan(self, done_iters: int, now: float) -> int | None:
        """The iteration count that ends the run on time at the present pace; None until a pace is known."""
        pace = self.pace
        if pace is None:
            return None
        eval_s = self.eval_s(pace)
        planned = plan_iters(self.budget_s, now - self.started, pace, eval_s, self.eval_interval, done_iters,
                             eval_s * self.final_evals)
        return min(planned, self.cap) if self.cap else planned

    def eval_s(self, pace: float) -> float:
        """An evaluation's expected seconds at this pace."""
        scaled = self.eval_steps * pace
        return scaled if self.last_eval_s is None else min(scaled, EVAL_SLOWDOWN * self.last_eval_s)

    def eval_fits(self, now: float) -> bool:
        """Whether an evaluation now still leaves the final one its time before the deadline."""
        pace = self.pace
        if pace is None:
            return True
        return self.left(now) >= (1 + self.final_evals) * self.eval_s(pace)

    def left(self, now: float) -> float:
        return self.budget_s - (now - self.started)

    def final_eval_share(self, now: float) -> float:
        """The share of a whole last evaluation that still fits before the deadline, with the full val pass
        after it (1: all of it)."""
        pace = self.pace
        if pace is None:
            return 1.0
        eval_s = self.eval_s(pace)
        return max(0.0, min(1.0, (self.left(now) - (self.final_evals - 1) * eval_s) / eval_s))

    def pace_moved(self) -> tuple[float, float] | None:
        """(the pace last reported, the pace now) when they differ by PACE_CHANGE or more, else None; the first
        known pace is reported once with (now, now)."""
        pace, was = self.pace, self.reported_pace
        if pace is None or (was is not None and 1 / PACE_CHANGE < pace / was < PACE_CHANGE):
            return None
        self.reported_pace = pace
        return (was or pace), pace

    def used(self, now: float) -> str:
        """'7.9 min of 8.0 min (98.8 %)'."""
        elapsed = now - self.started
        used = format_duration(elapsed) if elapsed >= 90 else f"{elapsed:.1f} s"
        return f"{used} of {format_duration(self.budget_s)} ({100 * elapsed / self.budget_s:.1f} %)"


class Plan:
    """The run's length and its place in the schedule: the config's max_iters, the plan a resumed run saved
    (finished as it was, without a deadline of its own), or a time budget's `deadline`, planned again every
    REPLAN_EVERY iterations. `max_iters` is the plan's (the config is never changed); `agree` gives every rank
    rank 0's value of its argument, as each rank times its own steps and all must stop at the same iteration."""

    def __init__(self, t: TrainConfig, saved: dict, deadline: Deadline | None, budget_s: float | None,
                 stop_after: int | None, agree: Callable[[Any], Any]):
        self.t, self.deadline, self.budget_s, self.stop_after, self.agree = t, deadline, budget_s, stop_after, agree
        self.max_iters = int(saved.get("max_iters", t.max_iters))
        self.progress = Progress(saved.get("progress", 0.0)) if deadline or saved else None
        self.planned = bool(saved)  # whether max_iters is a plan (saved in train_state.pt) or the config's

    @property
    def end_iter(self) -> int:
        """Where this process stops: the plan's end, or --stop-after's iteration before it."""
        return min(self.max_iters, self.stop_after or self.max_iters)

    def iterations(self, start: int) -> Iterator[int]:
        """start, start + 1, ... while short of `end_iter`, read again before each (a re-plan moves it)."""
        it = start
        while it < self.end_iter:
            yield it
            it += 1

    def lr(self, it: int) -> float:
        """Iteration `it`'s learning rate: the config's schedule, or along the plan's progress where it has one."""
        return lr_at(it, self.t, None if self.progress is None else self.progress.value)

    def after_step(self, it: int, seconds: float) -> str | None:
        """The step hook, after iteration `it` took `seconds`: the schedule moves on, and under a deadline the
        pace takes the step in, and every REPLAN_EVERY iterations the iteration count is planned again. Returns
        the line to print when the plan is the first one or the pace moved PACE_CHANGE x, else None."""
        if self.progress:
            self.progress.advance(it, self.max_iters, self.t.warmup_iters)
        if self.deadline is None:
            return None
        self.deadline.observe_step(seconds)
        done = it + 1
        if done % REPLAN_EVERY:
            return None
        planned = self.agree(self.deadline.plan(done, time.perf_counter()))
        if planned is None:  # no pace known yet
            return None
        moved = self.deadline.pace_moved()
        line = self.plan_line(planned, moved) if moved or not self.planned else None
        self.max_iters, self.planned = planned, True
        return line

    def plan_line(self, planned: int, moved: tuple[float, float] | None) -> str:
        """What the plan became and why: the first plan, or the pace moving PACE_CHANGE x."""
        d = self.deadline
        head = f"time budget {format_duration(d.budget_s)}: {planned:,} iterations"
        if not self.planned:
            return (f"{head} ({d.pace * 1e3:.0f} ms per step over the last {d.window_total:.0f} s, an evaluation "
                    f"{d.eval_steps:.0f} steps; planned again every {REPLAN_EVERY} iterations)")
        before, now = moved
        return (f"{head} (was {self.max_iters:,}: the pace moved, {now * 1e3:.0f} ms per step now against "
                f"{before * 1e3:.0f} ms before)")

    def eval_skipped(self, it: int, start_iter: int, now: float) -> str | None:
        """Why the evaluation due at iteration `it` (from `now`) is skipped, or None to run it: under a deadline,
        one that would eat into the final evaluation's time, or one close before it (never a run's first)."""
        if self.deadline is None or it == start_iter:
            return None
        if not self.deadline.eval_fits(now):
            return f"{self.deadline.left(now):.1f} s left: kept for the final one"
        if self.max_iters - it < self.t.eval_interval // 4:
            return f"the final one is {self.max_iters - it} iterations away"
        return None

    def observe_eval(self, seconds: float) -> None:
        if self.deadline:
            self.deadline.observe_eval(seconds)

    def final_eval_iters(self) -> tuple[int, str | None]:
        """The final evaluation's batches per split (fewer where the deadline has no time for all), and the line
        that says it was shortened (None: it was not)."""
        full, d = self.t.eval_iters, self.deadline
        if d is None or (share := d.final_eval_share(time.perf_counter())) >= 1:
            return full, None
        n = max(1, int(full * share))
        return n, (f"the final evaluation is shortened to {n} of {full} batches per split "
                   f"({d.left(time.perf_counter()):.1f} s left)")

    def used_line(self) -> str | None:
        """The run's last line under a deadline: the time it used and the iterations it ran."""
        if self.deadline is None:
            return None
        return (f"time budget {format_duration(self.deadline.budget_s)}: used {self.deadline.used(time.perf_counter())}"
                f", {self.end_iter:,} iterations")

    def saved(self) -> dict:
        """For train_state.pt: the plan a resume finishes ({} where max_iters is the config's)."""
        if not self.planned:
            return {}
        return {"seconds": self.budget_s or 0.0, "max_iters": self.max_iters, "progress": self.progress.value}
