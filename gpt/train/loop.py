"""Train the GPT: `python -m gpt.train --preset cpu --out-dir out`.

`train()` reads top to bottom like nanoGPT's train.py: `setup()` (data, model and optimizer, resume, precision,
plan), then `for it in plan.iterations(...)`: at every eval_interval the state saved and an evaluation, the step,
its seconds to the hooks of the time budget (`Plan.after_step`, gpt/train/budget.py) and of the precision check
(`Precision.after_step`, gpt/train/precision.py), the progress bar; then `conclude()`: the final evaluation and
the best model's full-pass val loss. The functions after `train()` come in the order it calls them. What it
writes and every option: `python -m gpt.train --help` (gpt/train/options.py).
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gpt.config import ModelConfig, TrainConfig
from gpt.data import BatchSampler, load_shakespeare, load_text, split
from gpt.errors import GPTError
from gpt.fsutil import check_dir, ensure_dir, fault_spec, remove_stale_temps
from gpt.model import GPT
from gpt.model.checkpoint import load_checkpoint, recover, save_checkpoint
from gpt.tokenizer import CharTokenizer
from gpt.train.budget import Deadline, Plan
from gpt.train.distributed import Dist, StopRequest, gather, setup_distributed, teardown
from gpt.train.ema import WeightEMA
from gpt.train.log import LOG, append_log, plot_losses, truncate_log
from gpt.train.losses import estimate_loss, full_loss
from gpt.train.optim import Optimizers
from gpt.train.options import DTYPES, Options, build_parser, configs
from gpt.train.precision import Precision, Recheck, autocast, bf16_hardware, choose_dtype
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


def train(o: Options, dist: Dist, stop: StopRequest) -> int:
    """Set up, then one iteration after another until the plan's end (or --stop-after's, or a stop request):
    at every eval_interval the state saved and an evaluation, then the step; at the end the final evaluation."""
    from tqdm import tqdm

    t, master = o.train, dist.master
    say = print if master else quiet
    r = setup(o, dist, say)
    plan, precision, parts = r.plan, r.precision, r.parts
    tokens_per_iter = t.batch_size * r.model.config.block_size * t.gradient_accumulation_steps
    bar = tqdm(initial=r.start_iter, total=plan.end_iter, disable=not o.progress or not master, dynamic_ncols=True,
               file=sys.stdout)
    write = bar.write if master else quiet  # tqdm.write prints even where the bar is disabled
    r.model.train()
    t0 = time.perf_counter()
    for it in plan.iterations(r.start_iter):
        if it % t.eval_interval == 0:
            scheduled_evaluation(r, it, write)
            t0 = time.perf_counter()
        dtype = precision.at(it)
        parts.optimizer.set_lr(plan.lr(it))
        step_start = time.perf_counter()
        loss = train_step(parts, it, dtype)
        seconds = time.perf_counter() - step_start
        for line in (plan.after_step(it, seconds), precision.after_step(it, dtype, seconds)):
            if line:
                write(line)
        bar.total = plan.end_iter
        bar.update(1)
        if (it + 1) % t.log_interval == 0 and master:
            now = time.perf_counter()
            bar.set_postfix(loss=f"{loss.item():.4f}", tok_s=f"{tokens_per_iter * t.log_interval / (now - t0):,.0f}")
            t0 = now
        if stop.requested(dist, o.device):
            save_state(r, it + 1)
            bar.close()
            say(f"{stop.signal or 'SIGTERM'}: finished iteration {it}, saved state; continue with "
                f"`python -m gpt.train --out-dir {r.out_dir} --resume` and the same options")
            return 0
    bar.close()
    return conclude(r, say)


def quiet(*args: object, **kwargs: object) -> None:
    """print() on the ranks other than 0: nothing."""


@dataclass
class Run:
    """What `setup()` builds and the loop works on. `best_val` is the lowest val loss evaluated so far; `plan`
    (the iteration count and schedule) and `precision` (the autocast dtype) change as the run goes."""

    o: Options
    dist: Dist
    out_dir: Path
    tokenizer: CharTokenizer
    train_data: np.ndarray
    val_data: np.ndarray
    data_sha256: str
    model: GPT
    eval_model: torch.nn.Module  # the model as evaluated: compiled where --compile is on
    parts: StepParts
    start_iter: int
    best_val: float
    plan: Plan
    precision: Precision


def setup(o: Options, dist: Dist, say: Callable[[str], None]) -> Run:
    """nanoGPT's order: data, model, optimizer, sampler; then train_state.pt for --resume, the precision and the
    run's plan, the model compiled and wrapped for DDP, and the run's first line."""
    t, device = o.train, o.device
    micro_steps = split_accumulation(t, dist)
    out_dir = ensure_dir(o.out_dir) if dist.master else Path(o.out_dir)
    tokenizer, train_data, val_data, data_sha256 = load_data(o)
    model_cfg = ModelConfig(**{**o.model, "vocab_size": tokenizer.vocab_size})
    if o.attention == "triton" and device.type == "cpu":
        say("note: --attention triton on CPU runs in the Triton interpreter (TRITON_INTERPRET=1): slow, for tests")
    scaler = grad_scaler(o.dtype, device)
    torch.manual_seed(o.seed)  # the same initial weights on every rank
    model = GPT(model_cfg, attention=o.attention).to(device)
    if dist.enabled:
        torch.manual_seed(o.seed + dist.rank)  # each rank its own dropout stream (and batches, below)
    optimizer = Optimizers(model, t, fused=device.type == "cuda")
    ema = WeightEMA(model, t.ema_decay) if t.ema_decay else None
    sampler = BatchSampler(train_data, model_cfg.block_size, t.batch_size, seed=o.seed + dist.rank)
    BatchSampler(val_data, model_cfg.block_size, t.batch_size, seed=0)  # a too-small val split fails now, not at eval
    if dist.master:
        recover(out_dir)  # finish a checkpoint save a kill interrupted after its commit point
        remove_stale_temps(out_dir, (STATE, LOG, "loss.png"))
    start_iter, best_val, saved_plan, saved_dtype = 0, float("inf"), {}, None
    if o.resume:
        start_iter, best_val, notes, saved_plan, saved_dtype = resume(
            out_dir / STATE, model, optimizer, scaler, sampler, t, o.seed, data_sha256, dist, device, ema)
        for note in notes:
            say(f"note: {note}")
        if o.stop_after is not None and o.stop_after <= start_iter:
            raise GPTError(f"--stop-after {o.stop_after} is not past the resume iteration {start_iter}")
        say(f"resuming from iteration {start_iter} (best val loss so far {best_val:.4f})")
    if dist.master:  # rows past the resume point were written after the state was saved: they are redone
        truncate_log(out_dir / LOG, start_iter)
    precision, how = choose_precision(o, dist, model, saved_dtype)
    plan = plan_run(o, saved_plan, len(val_data), model_cfg.block_size, dist)
    eval_model = torch.compile(model) if o.compile else model
    run = eval_model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        run = DistributedDataParallel(eval_model, device_ids=[device.index] if device.type == "cuda" else None)
    parts = StepParts(run, model, optimizer, scaler, ema, sampler, device, dist, micro_steps,
                      t.grad_clip if t.grad_clip > 0 else math.inf, out_dir)
    say(f"{model.num_params() / 1e6:.2f}M parameters, preset {o.preset}, {device.type}, attention {o.attention}, "
        f"compile {'on' if o.compile else 'off'}, {how}, {len(train_data):,} train / {len(val_data):,} val tokens"
        + (f", {dist.world} processes x {micro_steps} micro-steps" if dist.enabled else ""))
    return Run(o, dist, out_dir, tokenizer, train_data, val_data, data_sha256, model, eval_model, parts, start_iter,
               best_val, plan, precision)


def split_accumulation(t: TrainConfig, dist: Dist) -> int:
    """Each process's micro-steps per optimizer step: the global batch is batch_size x gradient_accumulation_steps
    whatever the number of processes, so these must split evenly over them."""
    if t.gradient_accumulation_steps % dist.world:
        raise GPTError(f"--gradient_accumulation_steps ({t.gradient_accumulation_steps}) must be a multiple "
                       f"of the number of processes ({dist.world}): the global batch is batch_size * "
                       "gradient_accumulation_steps; e.g. --gradient_accumulation_steps "
                       f"{dist.world * max(1, t.gradient_accumulation_steps // dist.world)}")
    return t.gradient_accumulation_steps // dist.world


def grad_scaler(dtype: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler:
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


def choose_precision(o: Options, dist: Dist, model: GPT, saved: str | None) -> tuple[Precision, str]:
    """The run's autocast dtype, and how it was chosen (for the first line): --dtype's, the resumed run's, or
    (--dtype auto) measured on rank 0, whose choice every rank takes (each measures its own, noisy, step time)."""
    dtype = o.dtype or DTYPES.get(saved)
    if dtype:
        return Precision(dtype, None, dist.from_rank0), \
            str(dtype).removeprefix("torch.") + (" (given)" if o.dtype else " (as the run started)")
    hardware = bf16_hardware() if o.device.type == "cpu" else None  # /proc/cpuinfo, read once
    dtype, how = choose_dtype(model, o.train.batch_size, o.device, hardware)
    dtype, how, hardware = dist.from_rank0((dtype, how, hardware))
    return Precision(dtype, Recheck(dtype, hardware) if hardware else None, dist.from_rank0), how


def plan_run(o: Options, saved: dict, val_tokens: int, block: int, dist: Dist) -> Plan:
    """A time budget plans the iteration count (and the schedule follows it) until the run ends; a resumed run
    finishes the plan saved in train_state.pt."""
    t, deadline = o.train, None
    if o.time_budget and not saved:
        final_evals = 1 + val_tokens / (2 * t.eval_iters * t.batch_size * block)  # + the full val pass
        deadline = Deadline(o.time_budget, o.started, t.eval_interval, eval_steps=2 * t.eval_iters / 3,
                            final_evals=final_evals, cap=o.max_iters_cap)
    return Plan(t, saved, deadline, o.time_budget, o.stop_after, dist.from_rank0)


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


def check_finite(losses: list[torch.Tensor], grad_norm: torch.Tensor, scaler, it: int, out_dir: Path) -> None:
    """Stop on a non-finite loss or gradient norm (one sync per step). With loss scaling, inf/NaN gradients
    are expected now and then: scaler.step skips that step, so only the losses are checked."""
    checked = losses if scaler.is_enabled() else [*losses, grad_norm.to(losses[0])]
    if not torch.isfinite(torch.stack(checked)).all().item():
        bad = [v.item() for v in losses if not math.isfinite(v.item())]  # (grads are all-reduced: ranks agree)
        what = f"loss became {bad[0]}" if bad else f"gradient norm became {grad_norm.item()}"
        raise GPTError(f"{what} at iteration {it}: training stopped; the last good checkpoint in {out_dir} is "
                       "kept (try a lower --learning_rate)")


def scheduled_evaluation(r: Run, it: int, write: Callable[[str], None]) -> None:
    """Every eval_interval: the state saved, then (rank 0) an evaluation, unless the time budget keeps its time
    for the final one; what it took goes to the budget (with the save: what the next one will cost)."""
    started = time.perf_counter()
    if not (r.o.resume and it == r.start_iter):  # the state it was resumed from is this one
        save_state(r, it)
    if not r.dist.master:
        return
    if skipped := r.plan.eval_skipped(it, r.start_iter, started):
        write(f"iter {it}: evaluation skipped ({skipped})")
        return
    evaluate(r, it, r.o.train.eval_iters, write)
    r.plan.observe_eval(time.perf_counter() - started)


def save_state(r: Run, it: int) -> None:
    """train_state.pt as of the start of iteration `it`: every rank's RNG state, gathered; rank 0 writes."""
    ranks = gather(r.dist, rng_state(r.parts.sampler, r.o.device))
    if r.dist.master:
        write_state(r.out_dir / STATE, it=it, best_val=r.best_val, model=r.model, optimizer=r.parts.optimizer,
                    scaler=r.parts.scaler, train_cfg=r.o.train, seed=r.o.seed, data_sha256=r.data_sha256,
                    ranks=ranks, plan=r.plan.saved(), dtype=r.precision.name, ema=r.parts.ema)


def evaluate(r: Run, it: int, eval_iters: int, write: Callable[[str], None]) -> None:
    """The loss estimate over eval_iters batches per split, logged and printed; the model saved as the checkpoint
    when its val loss is the best so far (with --ema_decay, the average: the model saved is the one scored)."""
    o, ema = r.o, r.parts.ema
    losses = estimate_loss(ema.model if ema else r.eval_model, {"train": r.train_data, "val": r.val_data}, o.train,
                           r.model.config.block_size, o.device, autocast(o.device, r.precision.dtype), o.seed,
                           eval_iters)
    append_log(r.out_dir / LOG, {"iter": it, "train_loss": losses["train"], "val_loss": losses["val"],
                                 "lr": r.plan.lr(it), "time": time.time(), "max_iters": r.plan.max_iters})
    write(f"iter {it}: train {losses['train']:.4f}, val {losses['val']:.4f}")
    if losses["val"] < r.best_val:
        r.best_val = losses["val"]
        save_checkpoint(r.out_dir, ema.model if ema else r.model, r.tokenizer, iter=it, val_loss=r.best_val,
                        val_loss_kind="estimate", data_sha256=r.data_sha256)


def conclude(r: Run, say: Callable[[str], None]) -> int:
    """After the loop: the state saved; at the plan's end (not --stop-after's), the final evaluation (shortened
    to what a time budget leaves), the best model's full val pass, and the time the budget used."""
    end = r.plan.end_iter
    if end > r.start_iter or not r.o.resume:
        save_state(r, end)
    if end < r.plan.max_iters:
        say(f"stopped after iteration {end} of {r.plan.max_iters}; continue with --resume")
        return 0
    if r.dist.master:
        eval_iters, shortened = r.plan.final_eval_iters()
        if shortened:
            say(shortened)
        evaluate(r, end, eval_iters, say)
        finish(r.out_dir, r.val_data, r.model.config.block_size, r.o.device, r.tokenizer)
        if used := r.plan.used_line():
            say(used)
    return 0


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
