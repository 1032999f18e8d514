"""The time budget: a deadline the training loop keeps whatever the machine's pace does (gpt/train/budget.py),
with the schedule following the plan (gpt/train/schedule.py)."""

import time

import pytest
import torch
from conftest import ONE_THREAD, TINY, read_log, run_module

from gpt.config import TrainConfig
from gpt.train.loop import build_parser
from gpt.train.schedule import lr_at


def test_time_budget_arithmetic():
    from gpt.train.budget import SAFETY, parse_duration, plan_iters

    assert [parse_duration(s) for s in ("90s", "8m", "1.5h", "300")] == [90, 480, 5400, 300]
    # 100 s x SAFETY, 10 s gone, 4 s for the end; each iteration 0.1 s + a 2 s evaluation every 10
    expected = 20 + (100 * SAFETY - 10 - 4) / 0.3
    assert abs(plan_iters(100, 10, 0.1, 2.0, 10, 20, 4.0) - expected) <= 1
    assert plan_iters(5, 10, 0.1, 2.0, 10, 20, 4.0) == 20  # already over: stop at once, never go back


def test_a_budget_run_saves_its_plan_and_a_resume_finishes_it(tmp_path, periodic_text_file):
    """The plan is printed and saved with the schedule's progress; a resume finishes that plan without
    planning again (it has no deadline of its own), and the learning rate reaches min_lr at its last iteration."""
    args = ["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--time-budget", "12s",
            "--eval_interval", "10"]
    first = run_module("gpt.train", *args, "--stop-after", "41", env=ONE_THREAD)  # planned at 20, 30, 40
    assert first.returncode == 0, first.stderr[-2000:]
    planned = [line for line in first.stdout.splitlines() if line.startswith("time budget 12 s: ")]
    assert planned and "planned again every 10 iterations" in planned[0], first.stdout
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    n, progress = state["time_budget"]["max_iters"], state["time_budget"]["progress"]
    assert state["iter"] == 41 < n and 0 < progress < 1
    second = run_module("gpt.train", *args, "--resume", env=ONE_THREAD)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "time budget" not in second.stdout
    log = read_log(tmp_path)
    assert log[-1]["iter"] == n and {row["max_iters"] for row in log if row["iter"] > 41} == {n}
    assert log[-1]["lr"] == pytest.approx(3e-4)  # TINY's --min_lr, reached at the last iteration


def test_an_explicit_max_iters_turns_the_preset_budget_off_and_caps_a_given_one(tmp_path, periodic_text_file,
                                                                                 capsys):
    from gpt.train.loop import main
    from gpt.train.options import configs

    assert configs(build_parser().parse_args(["--preset", "cpu"]))[2] == 480  # the preset's 8 minutes
    assert configs(build_parser().parse_args(["--preset", "cpu", "--max_iters", "7"]))[2] is None
    main(["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--time-budget", "10s",
          "--max_iters", "30", "--eval_interval", "100"])
    assert "time budget 10 s: 30 iterations" in capsys.readouterr().out and read_log(tmp_path)[-1]["iter"] == 30


def test_the_pace_is_the_recent_past_so_the_plan_grows_back_after_a_busy_spell():
    """Warm-up steps are not timed; the pace is the mean of the last 5 % of the budget (at least 10 steps):
    after a slow spell passes out of that window the plan is the fast pace's again, longer than during it."""
    from gpt.train.budget import MIN_WINDOW_STEPS, WARMUP_STEPS, Deadline, plan_iters

    d = Deadline(100, started=0.0, eval_interval=10, eval_steps=20, final_evals=2)
    for _ in range(WARMUP_STEPS + MIN_WINDOW_STEPS - 1):
        d.observe_step(1.0)
    assert d.pace is None and d.plan(14, 10.0) is None  # not enough steps timed yet
    d.observe_step(1.0)
    assert d.pace == 1.0 and d.plan(15, 15.0) == plan_iters(100, 15.0, 1.0, 20.0, 10, 15, 40.0)
    d.observe_step(1.0)  # the window is 5 s (5 % of 100): 11 steps of 1 s keep only the last 10
    assert len(d.window) == MIN_WINDOW_STEPS
    for _ in range(100):
        d.observe_step(0.1)
    assert d.pace == pytest.approx(0.1) and 49 <= len(d.window) <= 51
    slow, fast = plan_iters(100, 30.0, 1.0, 20.0, 10, 115, 40.0), d.plan(115, 30.0)
    assert abs(fast - plan_iters(100, 30.0, 0.1, 2.0, 10, 115, 4.0)) <= 1 and fast > slow
    d.observe_step(3.0)  # a one-off stall counts as 3 medians (0.3 s), not as 30 steps
    assert d.pace == pytest.approx((0.3 + 0.1 * (len(d.window) - 1)) / len(d.window))


def test_an_evaluation_is_counted_in_steps_and_never_eats_the_final_ones_time():
    """An evaluation measured at 2 s while steps took 0.1 s costs 20 steps, so 1 s once steps take 0.05 s, and
    at most 1.5x its measured 2 s when they slow down (a busy machine slows forward-only passes less). One that
    would leave the final evaluation and full pass (2 evaluations here) too little time does not fit; the last
    one shrinks to what is left."""
    from gpt.train.budget import WARMUP_STEPS, Deadline

    d = Deadline(100, started=0.0, eval_interval=10, eval_steps=5, final_evals=2)
    d.observe_eval(3.0)  # at iteration 0: no pace yet, kept in seconds until there is one
    for _ in range(WARMUP_STEPS + 20):
        d.observe_step(0.1)
    d.plan(25, 10.0)
    assert d.eval_steps == pytest.approx(30)  # 3 s over 0.1 s
    d.observe_eval(2.0)
    assert d.eval_steps == pytest.approx(20)
    for _ in range(150):
        d.observe_step(0.05)
    assert d.eval_s(d.pace) == pytest.approx(1.0)
    for _ in range(60):
        d.observe_step(0.2)  # four times slower: 20 steps would be 4 s; budgeted 3 s
    assert d.eval_s(d.pace) == pytest.approx(3.0)
    assert d.eval_fits(100 - 9.1) and not d.eval_fits(100 - 8.9)  # itself + 2 final ones
    assert d.final_eval_share(100 - 9.0) == 1 and d.final_eval_share(100 - 4.5) == pytest.approx(0.5)
    assert d.final_eval_share(100 - 2.0) == 0


def test_the_schedule_follows_a_plan_that_moves_without_jumping():
    """With a fixed end, progress is (it - warmup) / (end - warmup), the plain schedule; when the plan moves the
    learning rate bends from where it is: wsd stays at its peak until the iterations left are its decay share."""
    from gpt.train.schedule import Progress

    t = TrainConfig(learning_rate=1.0, min_lr=0.0, warmup_iters=10, lr_decay_iters=110, lr_schedule="wsd",
                    decay_fraction=0.2)
    fixed, moving, rates = Progress(), Progress(), []
    for it in range(110):
        assert lr_at(it, t, fixed.value) == pytest.approx(lr_at(it, t))
        fixed.advance(it, 110, t.warmup_iters)
        rates.append(lr_at(it, t, moving.value))
        moving.advance(it, 110 if it < 60 else 160, t.warmup_iters)  # at 60 the run is planned 50 longer
    for it in range(110, 160):
        rates.append(lr_at(it, t, moving.value))
        moving.advance(it, 160, t.warmup_iters)
    assert fixed.value == pytest.approx(1.0) and moving.value == pytest.approx(1.0)
    assert rates[10:120] == [1.0] * 110  # the stable phase lasted into the longer plan
    steps = [a - b for a, b in zip(rates[10:-1], rates[11:], strict=True)]  # after warmup
    assert max(steps) < 0.05 and min(steps) >= 0  # it fell steadily to the end, no jump

def slow_steps(monkeypatch, extra):
    """Make gpt.train's steps slower the way another program does: after each real step, sleep
    extra(share of the run's time so far, the step's seconds) seconds."""
    import gpt.train.loop

    step, start = gpt.train.loop.train_step, time.perf_counter()

    def slowed(parts, it, dtype):
        began = time.perf_counter()
        loss = step(parts, it, dtype)
        time.sleep(extra(time.perf_counter() - start, time.perf_counter() - began))
        return loss

    monkeypatch.setattr(gpt.train.loop, "train_step", slowed)


def stall_once(at_s, seconds):
    stalled = []

    def extra(elapsed, step_s):
        if elapsed >= at_s and not stalled:
            stalled.append(elapsed)
            return seconds
        return 0.0
    return extra


BUDGET_S = 8.0
LOADS = {  # each: the extra seconds a step takes, from the run's elapsed time and the step's own seconds
    "quiet": lambda elapsed, step_s: 0.0,
    "busy start, then quiet": lambda elapsed, step_s: 4 * step_s + 0.004 if elapsed < 0.3 * BUDGET_S else 0.0,
    "quiet, then a busy end": lambda elapsed, step_s: 4 * step_s + 0.004 if elapsed > 0.6 * BUDGET_S else 0.0,
    "a 1.5 s stall in the middle": "stall",
}


@pytest.mark.parametrize("load", LOADS)
def test_a_budget_is_a_deadline_whatever_the_load(tmp_path, periodic_text_file, monkeypatch, capsys, load,
                                                  one_torch_thread):
    """Steps 5x slower for the first 30 % of the budget, or for its last 40 %, or one stall: the run ends
    within [0.9, 1.05] of its budget, timed from main() as its own clock is, says how much it used, and its
    wsd schedule ends at (or within a tenth of its decay from) min_lr whatever the plan did on the way.
    (Re-planned only at evaluations, every 500 iterations here, the busy start ended the run at about half its
    budget.)"""
    import matplotlib.pyplot  # noqa: F401  (imported once per process: not the budget's to pay in a test)

    from gpt.train.loop import main

    slow_steps(monkeypatch, stall_once(0.5 * BUDGET_S, 1.5) if LOADS[load] == "stall" else LOADS[load])
    start = time.perf_counter()
    main(["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--time-budget", f"{BUDGET_S}s",
          "--eval_interval", "500", "--lr_schedule", "wsd"])
    wall = time.perf_counter() - start
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert 0.9 * BUDGET_S <= wall <= 1.05 * BUDGET_S, (load, wall, out[-1500:])
    n = read_log(tmp_path)[-1]["iter"]
    assert last.startswith(f"time budget {BUDGET_S:.0f} s: used ") and last.endswith(f", {n:,} iterations"), last
    # TINY's peak 3e-3 decayed to within 10 % of its --min_lr 3e-4 (exactly there unless the last re-plan found no
    # time left for the steps the one before had planned, e.g. after a slow checkpoint write)
    assert 3e-4 <= read_log(tmp_path)[-1]["lr"] <= 3e-4 + 0.1 * 2.7e-3
    if load == "busy start, then quiet":
        assert "the pace moved" in out, out[-1500:]


@pytest.mark.parametrize("probed, slower", [(torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32)])
def test_the_precision_is_checked_again_on_the_runs_own_steps(tmp_path, periodic_text_file, monkeypatch, capsys,
                                                             probed, slower, one_torch_thread):
    """The start-up probe chose `probed` (as a busy minute can make it), but the run's own steps in that
    precision are the slow ones: once the pace is steady the two take turns, the run switches, says so in one
    line, and the state keeps the new precision."""
    import gpt.train.loop

    monkeypatch.setattr(gpt.train.loop, "bf16_hardware", lambda: "AMX")
    monkeypatch.setattr(gpt.train.loop, "choose_dtype", lambda *a: (probed, f"{probed} (probed)"))
    step = gpt.train.loop.train_step

    def slowed(parts, it, dtype):
        loss = step(parts, it, dtype)
        time.sleep(0.03 if dtype == slower else 0.0)
        return loss

    monkeypatch.setattr(gpt.train.loop, "train_step", slowed)
    gpt.train.loop.main(["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--dtype", "auto",
                    "--max_iters", "80", "--eval_interval", "100"])
    checked = [line for line in capsys.readouterr().out.splitlines() if line.startswith("precision checked again")]
    other = torch.float32 if probed == torch.bfloat16 else torch.bfloat16
    assert len(checked) == 1 and str(other).removeprefix("torch.") in checked[0].split(": ", 1)[1][:9], checked
    assert "re-measured over 6 pairs of training steps" in checked[0]
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["dtype"] == str(other).removeprefix("torch.")


@pytest.mark.parametrize("clip", [1.0, 0.0])
def test_gradient_clipping_bounds_the_step_a_huge_loss_takes(tmp_path, periodic_text_file, monkeypatch, clip,
                                                             one_torch_thread):
    """At iteration 5 the loss is made 1e6 times larger (GPT_FAULT_INJECT=huge-loss@5): with --grad_clip 1 the
    gradient every optimizer step receives has norm <= 1, and Adam's second moments stay small; with
    --grad_clip 0 that step's gradient is the huge one."""
    from gpt import fsutil
    from gpt.train.loop import main
    from gpt.train.optim import Optimizers

    norms, second_moments = [], []
    step = Optimizers.step

    def recorded(self, scaler):
        grads = [p.grad for opt in self.parts for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        step(self, scaler)
        second_moments.append(max(s["exp_avg_sq"].max().item() for opt in self.parts for s in opt.state.values()
                                  if "exp_avg_sq" in s))

    monkeypatch.setattr(Optimizers, "step", recorded)
    monkeypatch.setenv(fsutil.FAULT_ENV, "huge-loss@5")
    main(["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--max_iters", "8",
          "--eval_interval", "100", "--grad_clip", str(clip), "--optimizer", "adamw"])
    assert len(norms) == 8
    if clip:
        assert max(norms) <= clip * (1 + 1e-5) and max(second_moments) < 1.0, (norms, second_moments)
    else:
        assert norms[5] > 1e3 * max(norms[:5]) and max(second_moments) > 1e3, norms
