"""Train the GPT: `python -m gpt.train --preset cpu --out-dir out`.

The loop below reads top to bottom: data, model and optimizer, resume, then steps with an evaluation (and a
saved train_state.pt) every eval_interval, and at the end the best model's full-pass val loss. What it
writes and every option: `python -m gpt.train --help` (gpt/train/options.py).
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gpt.config import ModelConfig
from gpt.data import BatchSampler, load_shakespeare, load_text, split
from gpt.errors import GPTError
from gpt.fsutil import check_dir, ensure_dir, fault_spec, remove_stale_temps
from gpt.model import GPT
from gpt.model.checkpoint import load_checkpoint, recover, save_checkpoint
from gpt.tokenizer import CharTokenizer
from gpt.train.budget import REPLAN_EVERY, Deadline, format_duration
from gpt.train.distributed import Dist, StopRequest, gather, setup_distributed, teardown
from gpt.train.ema import WeightEMA
from gpt.train.log import LOG, append_log, plot_losses, truncate_log
from gpt.train.losses import estimate_loss, full_loss
from gpt.train.optim import Optimizers
from gpt.train.options import DTYPES, Options, build_parser, configs
from gpt.train.precision import Recheck, autocast, bf16_hardware, choose_dtype
from gpt.train.schedule import Progress, lr_at
from gpt.train.state import STATE, resume, rng_state, write_state


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    model_fields, train_cfg, budget = configs(args)
    check_dir(args.out_dir)
    dist, device = setup_distributed(args.device)
    opts = Options(
        out_dir=args.out_dir, data=args.data, data_dir=args.data_dir, preset=args.preset, model=model_fields,
        train=train_cfg, attention=args.attention or "sdpa", device=device,
        dtype=DTYPES.get(args.dtype),
        compile=device.type == "cuda" if args.compile is None else args.compile, seed=args.seed,
        resume=args.resume, stop_after=args.stop_after, progress=not args.no_progress, time_budget=budget,
        max_iters_cap=train_cfg.max_iters if budget and args.cfg_max_iters else None, started=started)
    try:
        with StopRequest() as stop:
            return train(opts, dist, stop)
    finally:
        teardown(dist)


def grad_scaler(dtype: torch.dtype, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast on CUDA (small fp16 gradients underflow to 0); a no-op otherwise."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")


def load_data(o: Options) -> tuple[CharTokenizer, np.ndarray, np.ndarray, str]:
    """(tokenizer, train ids, val ids, sha256 of the text) of the run's text."""
    text = load_text(o.data) if o.data else load_shakespeare(o.data_dir)
    if not text:
        raise GPTError(f"data file {o.data} is empty")
    tokenizer = CharTokenizer.from_text(text)
    ids = np.array(tokenizer.encode(text), dtype=np.uint16 if tokenizer.vocab_size < 65536 else np.int64)
    return tokenizer, *split(ids), hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class StepParts:
    """What a training step touches."""

    run: torch.nn.Module  # the model as called: compiled and/or wrapped in DDP
    model: GPT
    optimizer: Optimizers
    scaler: torch.amp.GradScaler
    ema: WeightEMA | None
    sampler: BatchSampler
    device: torch.device
    dist: Dist
    micro_steps: int
    clip: float  # the gradient's largest norm (inf: no clipping)
    out_dir: Path
    # test hooks (GPT_FAULT_INJECT): a NaN loss, or one 1e6 times too large, at iteration k
    nan_at: int | None = field(default_factory=lambda: fault_spec("nan-loss"))
    huge_at: int | None = field(default_factory=lambda: fault_spec("huge-loss"))


def train_step(s: StepParts, it: int, dtype: torch.dtype) -> torch.Tensor:
    """One optimizer step over micro_steps batches in `dtype` autocast, the gradient clipped to `clip`; returns
    the last micro-batch's loss."""
    s.optimizer.use_dtype(dtype)
    losses = []
    for micro in range(s.micro_steps):
        x, y = (torch.from_numpy(a).to(s.device, non_blocking=True) for a in s.sampler.next())
        with s.run.no_sync() if s.dist.enabled and micro < s.micro_steps - 1 else nullcontext():
            with autocast(s.device, dtype):
                _, loss = s.run(x, y)
            if it == s.nan_at:
                loss = loss * float("nan")
            elif it == s.huge_at:
                loss = loss * 1e6
            losses.append(loss.detach())
            s.scaler.scale(loss / s.micro_steps).backward()
    s.optimizer.unscale_(s.scaler)
    grad_norm = torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.clip)
    check_finite(losses, grad_norm, s.scaler, it, s.out_dir)
    s.optimizer.step(s.scaler)
    s.scaler.update()
    if s.ema:
        s.ema.update(s.model)
    s.optimizer.zero_grad()
    return loss


def train(o: Options, dist: Dist, stop: StopRequest) -> int:
    t, device, master = o.train, o.device, dist.master
    say = print if master else (lambda *a, **k: None)
    if t.gradient_accumulation_steps % dist.world:
        raise GPTError(f"--gradient_accumulation_steps ({t.gradient_accumulation_steps}) must be a multiple "
                       f"of the number of processes ({dist.world}): the global batch is batch_size * "
                       "gradient_accumulation_steps; e.g. --gradient_accumulation_steps "
                       f"{dist.world * max(1, t.gradient_accumulation_steps // dist.world)}")
    micro_steps = t.gradient_accumulation_steps // dist.world
    out_dir = ensure_dir(o.out_dir) if master else Path(o.out_dir)
    tokenizer, train_data, val_data, data_sha256 = load_data(o)
    model_cfg = ModelConfig(**{**o.model, "vocab_size": tokenizer.vocab_size})
    block = model_cfg.block_size
    if o.attention == "triton" and device.type == "cpu":
        say("note: --attention triton on CPU runs in the Triton interpreter (TRITON_INTERPRET=1): slow, for tests")
    scaler = grad_scaler(o.dtype, device)

    torch.manual_seed(o.seed)  # the same initial weights on every rank
    model = GPT(model_cfg, attention=o.attention).to(device)
    if dist.enabled:
        torch.manual_seed(o.seed + dist.rank)  # each rank its own dropout stream (and batches, below)
    optimizer = Optimizers(model, t, fused=device.type == "cuda")
    ema = WeightEMA(model, t.ema_decay) if t.ema_decay else None
    train_sampler = BatchSampler(train_data, block, t.batch_size, seed=o.seed + dist.rank)
    BatchSampler(val_data, block, t.batch_size, seed=0)  # a too-small val split fails now, not at eval
    start_iter, best_val, log_path, saved_plan, dtype = 0, float("inf"), out_dir / LOG, {}, o.dtype
    if master:
        recover(out_dir)  # finish a checkpoint save a kill interrupted after its commit point
        remove_stale_temps(out_dir, (STATE, LOG, "loss.png"))
    if o.resume:
        start_iter, best_val, notes, saved_plan, saved_dtype = resume(
            out_dir / STATE, model, optimizer, scaler, train_sampler, t, o.seed, data_sha256, dist, device, ema)
        dtype = dtype or DTYPES.get(saved_dtype)
        for note in notes:
            say(f"note: {note}")
        if o.stop_after is not None and o.stop_after <= start_iter:
            raise GPTError(f"--stop-after {o.stop_after} is not past the resume iteration {start_iter}")
        say(f"resuming from iteration {start_iter} (best val loss so far {best_val:.4f})")
    if master:  # rows past the resume point were written after the state was saved: they are redone
        truncate_log(log_path, start_iter)
    precision, recheck = str(dtype).removeprefix("torch.") + (" (given)" if o.dtype else " (as the run started)"), None
    if dtype is None:  # every rank takes rank 0's choice (each measured its own, noisy, step time)
        dtype, precision = choose_dtype(model, t.batch_size, device)
        dtype, precision = gather(dist, {"choice": (dtype, precision)})[0]["choice"]
        hardware = bf16_hardware() if device.type == "cpu" else None
        recheck = Recheck(dtype, hardware) if hardware else None
    # A time budget plans the iteration count (and the schedule follows it) until the run ends; a resumed run
    # finishes the plan saved in train_state.pt.
    max_iters = int(saved_plan.get("max_iters", t.max_iters))
    budget = None
    if o.time_budget and not saved_plan:
        final_evals = 1 + len(val_data) / (2 * t.eval_iters * t.batch_size * block)  # + the full val pass
        budget = Deadline(o.time_budget, o.started, t.eval_interval, eval_steps=2 * t.eval_iters / 3,
                          final_evals=final_evals, cap=o.max_iters_cap)
    progress = Progress(saved_plan.get("progress", 0.0)) if budget or saved_plan else None
    planned = bool(saved_plan)
    eval_model = torch.compile(model) if o.compile else model
    run = eval_model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        run = DistributedDataParallel(eval_model, device_ids=[device.index] if device.type == "cuda" else None)
    parts = StepParts(run, model, optimizer, scaler, ema, train_sampler, device, dist, micro_steps,
                      t.grad_clip if t.grad_clip > 0 else math.inf, out_dir)
    say(f"{model.num_params() / 1e6:.2f}M parameters, preset {o.preset}, {device.type}, attention {o.attention}, "
        f"compile {'on' if o.compile else 'off'}, {precision}, {len(train_data):,} train / {len(val_data):,} val tokens"
        + (f", {dist.world} processes x {micro_steps} micro-steps" if dist.enabled else ""))

    def save_state(it: int) -> None:
        ranks = gather(dist, rng_state(train_sampler, device))  # every rank takes part; rank 0 writes
        if master:
            plan = {"seconds": o.time_budget or 0.0, "max_iters": max_iters, "progress": progress.value} \
                if planned else {}
            write_state(out_dir / STATE, it=it, best_val=best_val, model=model, optimizer=optimizer, scaler=scaler,
                        train_cfg=t, seed=o.seed, data_sha256=data_sha256, ranks=ranks, plan=plan,
                        dtype=str(dtype).removeprefix("torch."), ema=ema)

    def evaluate(it: int, eval_iters: int = t.eval_iters) -> None:
        nonlocal best_val
        scored = ema.model if ema else eval_model  # the model that is saved is the one scored
        losses = estimate_loss(scored, {"train": train_data, "val": val_data}, t, block, device,
                               autocast(device, dtype), o.seed, eval_iters)
        append_log(log_path, {"iter": it, "train_loss": losses["train"], "val_loss": losses["val"],
                              "lr": lr_at(it, t, progress and progress.value), "time": time.time(),
                              "max_iters": max_iters})
        bar.write(f"iter {it}: train {losses['train']:.4f}, val {losses['val']:.4f}")
        if losses["val"] < best_val:
            best_val = losses["val"]
            save_checkpoint(out_dir, ema.model if ema else model, tokenizer, iter=it, val_loss=best_val,
                            val_loss_kind="estimate", data_sha256=data_sha256)

    from tqdm import tqdm

    tokens_per_iter = t.batch_size * block * t.gradient_accumulation_steps
    end_iter = min(max_iters, o.stop_after or max_iters)
    bar = tqdm(initial=start_iter, total=end_iter, disable=not o.progress or not master, dynamic_ncols=True,
               file=sys.stdout)
    model.train()
    t0 = time.perf_counter()
    it = start_iter
    while it < end_iter:
        if it % t.eval_interval == 0:
            eval_start = time.perf_counter()
            if not (o.resume and it == start_iter):  # the state it was resumed from is this one
                save_state(it)
            if master and budget and it > start_iter and not budget.eval_fits(eval_start):
                bar.write(f"iter {it}: evaluation skipped ({budget.left(eval_start):.1f} s left: kept for the "
                          "final one)")
            elif master and budget and it > start_iter and max_iters - it < t.eval_interval // 4:
                bar.write(f"iter {it}: evaluation skipped (the final one is {max_iters - it} iterations away)")
            elif master:
                evaluate(it)
                if budget:
                    budget.observe_eval(time.perf_counter() - eval_start)
            t0 = time.perf_counter()
        step_start = time.perf_counter()
        step_dtype = recheck.dtype(it) if recheck else dtype
        optimizer.set_lr(lr_at(it, t, progress and progress.value))
        loss = train_step(parts, it, step_dtype)
        seconds = time.perf_counter() - step_start
        if progress:
            progress.advance(it, max_iters, t.warmup_iters)
        if budget:
            budget.observe_step(seconds)
        if recheck:
            recheck.observe(it, step_dtype, seconds)
        it += 1
        bar.update(1)
        if it % t.log_interval == 0 and master:
            now = time.perf_counter()
            bar.set_postfix(loss=f"{loss.item():.4f}", tok_s=f"{tokens_per_iter * t.log_interval / (now - t0):,.0f}")
            t0 = now
        if it % REPLAN_EVERY == 0 and (budget or recheck):
            shared = gather(dist, {"n": budget.plan(it, time.perf_counter()) if budget else None,
                                   "steady": bool(recheck and recheck.steady),
                                   "result": recheck.result() if recheck and recheck.complete else None})[0]
            if shared["n"] is not None:
                if (moved := budget.pace_moved()) or not planned:
                    bar.write(plan_line(o.time_budget, shared["n"], max_iters if planned else None, moved, budget))
                max_iters, planned = shared["n"], True
                end_iter = bar.total = min(max_iters, o.stop_after or max_iters)
            if shared["steady"]:
                recheck.begin(it)
            if shared["result"]:
                bar.write(f"precision checked again at iteration {it}: {shared['result'][1]}")
                dtype, recheck = shared["result"][0], None
        if stop.requested(dist, device):
            save_state(it)
            bar.close()
            say(f"{stop.signal or 'SIGTERM'}: finished iteration {it - 1}, saved state; continue with "
                f"`python -m gpt.train --out-dir {out_dir} --resume` and the same options")
            return 0
    bar.close()
    if end_iter > start_iter or not o.resume:
        save_state(end_iter)
    if end_iter < max_iters:
        say(f"stopped after iteration {end_iter} of {max_iters}; continue with --resume")
        return 0
    if master:
        final_iters = t.eval_iters
        if budget and (share := budget.final_eval_share(time.perf_counter())) < 1:
            final_iters = max(1, int(t.eval_iters * share))
            say(f"the final evaluation is shortened to {final_iters} of {t.eval_iters} batches per split "
                f"({budget.left(time.perf_counter()):.1f} s left)")
        evaluate(end_iter, final_iters)
        finish(out_dir, val_data, block, device, tokenizer)
        if budget:
            say(f"time budget {format_duration(o.time_budget)}: used {budget.used(time.perf_counter())}, "
                f"{end_iter:,} iterations")
    return 0


def plan_line(budget_s: float, planned: int, was: int | None, moved: tuple[float, float] | None,
              budget: Deadline) -> str:
    """The line that says what the plan became and why: the first plan, or the pace moving PACE_CHANGE x."""
    head = f"time budget {format_duration(budget_s)}: {planned:,} iterations"
    if was is None:
        return (f"{head} ({budget.pace * 1e3:.0f} ms per step over the last {budget.window_total:.0f} s, an "
                f"evaluation {budget.eval_steps:.0f} steps; planned again every {REPLAN_EVERY} iterations)")
    before, now = moved
    return (f"{head} (was {was:,}: the pace moved, {now * 1e3:.0f} ms per step now against {before * 1e3:.0f} ms "
            "before)")


def check_finite(losses: list[torch.Tensor], grad_norm: torch.Tensor, scaler, it: int, out_dir: Path) -> None:
    """Stop on a non-finite loss or gradient norm (one sync per step). With loss scaling, inf/NaN gradients
    are expected now and then: scaler.step skips that step, so only the losses are checked."""
    checked = losses if scaler.is_enabled() else [*losses, grad_norm.to(losses[0])]
    if not torch.isfinite(torch.stack(checked)).all().item():
        bad = [v.item() for v in losses if not math.isfinite(v.item())]  # (grads are all-reduced: ranks agree)
        what = f"loss became {bad[0]}" if bad else f"gradient norm became {grad_norm.item()}"
        raise GPTError(f"{what} at iteration {it}: training stopped; the last good checkpoint in {out_dir} is "
                       "kept (try a lower --learning_rate)")


def finish(out_dir: Path, val_data: np.ndarray, block: int, device: torch.device, tokenizer: CharTokenizer) -> None:
    """The best model's exact val loss (a full pass in float32, whatever the training dtype), recorded in its
    checkpoint; the loss plot."""
    best, _, manifest = load_checkpoint(out_dir, device=device)
    val = full_loss(best, val_data, block, device)
    save_checkpoint(out_dir, best, tokenizer, iter=manifest["iter"], val_loss=val, val_loss_kind="full pass",
                    val_loss_estimate=manifest.get("val_loss_estimate", manifest["val_loss"]),
                    **{k: manifest[k] for k in ("data_sha256",) if k in manifest})
    plot_losses(out_dir / LOG, out_dir / "loss.png")
    print(f"done: best model (iteration {manifest['iter']}) has val loss {val:.4f} (full pass over "
          f"{len(val_data):,} tokens); saved to {out_dir}/model.safetensors")

