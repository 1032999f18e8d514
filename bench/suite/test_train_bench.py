"""Training step tokens/s: eager vs torch.compile settings, on the device this runs on.

One step = what gpt.train does per iteration: forward + loss, backward, clip_grad_norm_(1.0), AdamW step,
zero_grad; the preset's dropout, fp32 (bf16 autocast only in the *-bf16 variants). Batch per preset:
plan.TRAIN_BATCH (shakespeare: 8 x 256 tokens). Each variant builds the same model from the same seed,
takes three untimed steps (compile), then as many timed steps as fit the time budget; median reported.
Variants (--bench-train-variants; `all` for every one): see bench.plan.TRAIN_VARIANTS. The eager variant
also profiles two steps: extern_fraction = the share of ATen op time in matmuls and SDPA, which torch.compile
does not change on CPU in training, so 1 / extern_fraction bounds its speed-up.
On CUDA, bench/suite/test_attention_bench.py times the compiled step per attention backend.
"""

from __future__ import annotations

import pytest
import torch

from bench.harness import limits, plan
from bench.harness.models import model_config
from bench.harness.timing import measure, timed


def make_step(preset: str, variant: str, device: str):
    from gpt.model import GPT
    from gpt.train.precision import autocast

    cfg = model_config(preset)
    batch = plan.TRAIN_BATCH.get(preset, 8)
    torch.manual_seed(0)
    model = GPT(cfg).to(device).train()
    opt = torch.optim.AdamW(model.optimizer_groups(0.1), lr=1e-4, betas=(0.9, 0.99),
                            fused=device == "cuda" or None)
    run = model
    if variant.startswith("compile"):
        mode = "max-autotune-no-cudagraphs" if variant == "compile-maxat" else None
        options = {"fallback_random": True} if variant == "compile-fbrand" else None
        run = torch.compile(model, mode=mode, options=options)
    amp = autocast(torch.device(device), torch.bfloat16 if variant.endswith("bf16") else torch.float32)
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), generator=g).to(device) for _ in range(2))

    def clip_and_step():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    if variant == "compile-step":
        clip_and_step = torch.compile(clip_and_step)

    def step():
        with amp:
            _, loss = run(x, y)
        loss.backward()
        clip_and_step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    return step, cfg, batch


def test_train_step(benchmark, preset, train_variant, bench_sizes, threads):
    import torch._dynamo

    torch._dynamo.reset()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    step, cfg, batch = make_step(preset, train_variant, device)
    compile_s = timed(step)
    step()
    t = timed(step)
    rounds = plan.rounds_for(t, bench_sizes)
    tokens = batch * cfg.block_size
    benchmark.group = f"train step {preset} (batch {batch} x {cfg.block_size} tokens, {device})"
    benchmark.extra_info.update(
        kind="train", preset=preset, variant=train_variant, description=plan.TRAIN_VARIANTS[train_variant],
        device=device, batch=batch, block_size=cfg.block_size, tokens_per_step=tokens, threads=threads,
        first_step_s=round(compile_s, 2), dropout=cfg.dropout,
        flops_per_step=limits.train_flops(cfg.n_layer, cfg.n_embd, cfg.vocab_size, tokens, cfg.block_size),
    )
    median = measure(benchmark, step, rounds)
    if median:
        benchmark.extra_info["tokens_per_s"] = round(tokens / median, 1)
    if train_variant == "eager" and device == "cpu":
        benchmark.extra_info["extern_fraction"] = round(extern_fraction(step), 3)


def extern_fraction(step, steps: int = 2) -> float:
    """Share of an eager step's op time spent in matmuls and SDPA: the part torch.compile hands back to ATen."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in plan.EXTERN_OPS) / max(total, 1e-9)


def test_train_step_cost_itemises_a_step(pytestconfig, capsys):
    """bench.train_step_cost: every part of the cpu preset's step, Muon's and AdamW's steps apart."""
    from bench import train_step_cost

    if not pytestconfig.getoption("--bench-smoke"):
        pytest.skip("a probe run by hand: python -m bench.train_step_cost [--compile]")
    assert train_step_cost.main(["--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert all(part in out for part in ("forward", "backward", "clip_grad_norm_", "Muon.step", "AdamW.step", "step"))
