"""Where a training step's time goes: `python -m bench.train_step_cost [--preset cpu] [--compile] [--steps 15]`.

One step is what gpt.train does per iteration on the preset's shape and optimizer (the `cpu` preset: Muon for
the blocks' matrices, AdamW for the rest), in float32 or `--dtype bfloat16` autocast: forward + loss,
backward, clip_grad_norm_, each optimizer's step, zero_grad. Each part is timed on its own (median over
`--steps` steps after three untimed ones). `--compile` also runs the model under torch.compile: the time to
compile (the first three steps) and the eager and compiled steps timed in turns (eager, compiled, eager, ...),
so a busy spell touches both; whether compiling pays inside a budget is then simple arithmetic.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict

import torch

from bench.harness.machine import cpu_model
from gpt.config import ModelConfig, get_preset
from gpt.errors import ArgumentParser, run_cli
from gpt.model import GPT
from gpt.train.optim import Optimizers
from gpt.train.precision import autocast


def timed_step(run, model: GPT, opt: Optimizers, x: torch.Tensor, y: torch.Tensor, amp) -> dict[str, float]:
    """One training step; seconds per part."""
    parts, start = {}, time.perf_counter()

    def mark(name: str) -> None:
        nonlocal start
        parts[name] = time.perf_counter() - start
        start = time.perf_counter()

    with amp:
        _, loss = run(x, y)
    mark("forward")
    loss.backward()
    mark("backward")
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    mark("clip_grad_norm_")
    for part in opt.parts:
        part.step()
        mark(f"{type(part).__name__}.step")
    opt.zero_grad()
    mark("zero_grad")
    return parts


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.train_step_cost", description=__doc__)
    p.add_argument("--preset", default="cpu", help="the model shape and optimizer (default: cpu)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="autocast dtype")
    p.add_argument("--steps", type=int, default=15, help="timed steps (default 15)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile and its steps")
    args = p.parse_args(argv)
    preset = get_preset(args.preset)
    torch.manual_seed(0)
    cfg, t = ModelConfig(**{**asdict(preset.model), "vocab_size": 65}), preset.train
    model = GPT(cfg)
    opt = Optimizers(model, t)
    dtype = getattr(torch, args.dtype)
    opt.use_dtype(dtype)
    amp = autocast(torch.device("cpu"), dtype)
    x, y = (torch.randint(0, 65, (t.batch_size, cfg.block_size)) for _ in range(2))
    print(f"{args.preset}: {model.num_params() / 1e6:.2f}M parameters, batch {t.batch_size} x {cfg.block_size}, "
          f"{t.optimizer}, {args.dtype}, {torch.get_num_threads()} threads, {cpu_model()}")
    for _ in range(3):
        timed_step(model, model, opt, x, y, amp)
    rows = [timed_step(model, model, opt, x, y, amp) for _ in range(args.steps)]
    total = statistics.median(sum(r.values()) for r in rows)
    for name in rows[0]:
        part = statistics.median(r[name] for r in rows)
        print(f"  {name:18s} {part * 1e3:8.1f} ms  {100 * part / total:5.1f} %")
    print(f"  {'step':18s} {total * 1e3:8.1f} ms")
    if args.compile:
        compiled, start = torch.compile(model), time.perf_counter()
        for _ in range(3):
            timed_step(compiled, model, opt, x, y, amp)
        compile_s = time.perf_counter() - start
        eager, fast = [], []
        for _ in range(args.steps):
            eager.append(sum(timed_step(model, model, opt, x, y, amp).values()))
            fast.append(sum(timed_step(compiled, model, opt, x, y, amp).values()))
        e, c = statistics.median(eager), statistics.median(fast)
        payback = f"it pays back after {compile_s / (e - c):,.0f} steps" if e > c else "it never pays back"
        print(f"torch.compile: {compile_s:.1f} s to compile (3 steps); step {e * 1e3:.1f} ms eager, {c * 1e3:.1f} ms "
              f"compiled ({e / c:.3f}x); {payback}")
    return 0


if __name__ == "__main__":
    run_cli(main)
