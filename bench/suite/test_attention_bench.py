"""Attention benchmarks on a CUDA GPU (the whole module is skipped without one).

    pytest bench/suite/test_attention_bench.py      # pytest-benchmark stats + a TFLOP/s table at the end

1. Causal attention, bf16, forward and forward+backward: triton (kernels/attention.py) vs SDPA forced to
   its flash backend vs naive, at (B=64, H=6 or 12, T=256, D=64). extra_info holds TFLOP/s and the speed
   relative to SDPA (sdpa time / this time, > 1 is faster than SDPA).
2. A compiled training step (bf16 autocast, fused AdamW) of the shakespeare preset with each backend, in
   tokens/s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="attention benchmarks need a CUDA GPU")]

SHAPES = [(64, 6, 256, 64), (64, 12, 256, 64)]  # (B, H, T, D)
BACKENDS = ["triton", "sdpa", "naive"]
HEADER = ("workload", "mode", "backend", "ms", "throughput", "vs sdpa")
ROWS: list[tuple[str, ...]] = []


def attention_fn(backend: str) -> Callable[..., torch.Tensor]:
    from gpt.model.attention import naive_attention
    from kernels.attention import flash_attention

    def sdpa_flash(q, k, v):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return {"triton": flash_attention, "sdpa": sdpa_flash, "naive": naive_attention}[backend]


def workload(backend: str, shape: tuple[int, int, int, int], mode: str) -> tuple[Callable[[], object], float]:
    """The timed closure (synchronised) and its FLOPs: causal fwd = 2 matmuls x 2·T²·D / 2; bwd = 2.5 x fwd."""
    B, H, T, D = shape
    attn = attention_fn(backend)
    q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=mode == "fwd+bwd")
               for _ in range(3))
    do = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16)
    flops = 2 * B * H * T * T * D * (1.0 if mode == "fwd" else 3.5)

    def run():
        if mode == "fwd":
            with torch.no_grad():
                attn(q, k, v)
        else:
            torch.autograd.grad(attn(q, k, v), (q, k, v), do)
        torch.cuda.synchronize()

    return run, flops


def mean_seconds(fn: Callable[[], object]) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100) / 1e3


@pytest.fixture(scope="module", autouse=True)
def report_table(request):
    yield
    if ROWS:
        tr = request.config.pluginmanager.get_plugin("terminalreporter")
        rows = [HEADER, *ROWS]
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
        tr.write_line("")
        for row in rows:
            tr.write_line("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-H{}-T{}-D{}".format(*s))
def test_attention_speed(benchmark, shape, backend, mode):
    benchmark.group = f"attention {mode} B{shape[0]} H{shape[1]} T{shape[2]} D{shape[3]} bf16"
    run, flops = workload(backend, shape, mode)
    run()  # compile / autotune outside the timing
    benchmark.pedantic(run, rounds=20, iterations=5, warmup_rounds=2)
    sdpa_s = mean_seconds(workload("sdpa", shape, mode)[0])
    this_s = benchmark.stats.stats.mean
    benchmark.extra_info.update(tflops=round(flops / this_s / 1e12, 2), vs_sdpa=round(sdpa_s / this_s, 3))
    ROWS.append((benchmark.group.split(" ", 2)[2], mode, backend, f"{this_s * 1e3:.3f}",
                 f"{flops / this_s / 1e12:.1f} TFLOP/s", f"{sdpa_s / this_s:.2f}x"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_shakespeare_train_step_tokens_per_s(benchmark, backend):
    import torch._dynamo

    from gpt.config import get_preset
    from gpt.model import GPT

    torch._dynamo.reset()
    preset = get_preset("shakespeare")
    torch.manual_seed(0)
    model = GPT(replace(preset.model, vocab_size=65), attention=backend).cuda()
    opt = torch.optim.AdamW(model.optimizer_groups(preset.train.weight_decay), lr=1e-4, fused=True)
    step_fn = torch.compile(model)
    B, T = preset.train.batch_size, preset.model.block_size
    x, y = (torch.randint(0, 65, (B, T), device="cuda") for _ in range(2))

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss = step_fn(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()

    for _ in range(3):  # compile and autotune
        step()
    benchmark.group = "shakespeare preset train step (compiled, bf16)"
    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=1)
    tokens_s = B * T / benchmark.stats.stats.mean
    benchmark.extra_info["tokens_per_s"] = round(tokens_s)
    ROWS.append(("shakespeare train step", f"B{B} T{T}", backend, f"{benchmark.stats.stats.mean * 1e3:.3f}",
                 f"{tokens_s:,.0f} tok/s", ""))
