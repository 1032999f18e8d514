"""Decode throughput and prefill latency of every backend on the same (random) weights.

Decode: gpt.decode.loop.generate (the loop `python -m gpt.sample` runs) with temperature 0, a 64-character
prompt and 256 or 500 new tokens, batch 1 and 8 (`--num-samples 8`); tokens/s = batch x new tokens ÷ the
median wall time of a whole generation (prefill and the re-prefills past block_size included).
Each run is preceded by an untimed warm-up run of the same size (for torch.compile: two, the first compiles).
The no-cache baseline recomputes the whole window per token (tens of seconds per run on shakespeare): its
warm-up generates 32 tokens, it gets as many rounds as fit the time budget, at least one, and at batch > 1
it runs only the shortest length unless --bench-full-baseline (the report then divides the longer runs by
it, marked †: its tokens/s barely depends on the length once the window slides).

`genai-loop` is onnxruntime-genai's own C++ loop (its greedy search) on the same file, batch 1, with our window
policy applied from outside (bench.harness.models.GenaiLoop); `genai-fp32` is its engine behind our decoder interface.

Before any timing, each backend's greedy output is checked against eager PyTorch with a KV cache fed the same
ids (`check_greedy`): a fast backend that writes the wrong text fails instead of being timed.

Prefill: the time to first token for a full block_size prompt, batch 1 (decoder.prefill + argmax).
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.harness import limits, plan
from bench.harness.models import prompt_ids
from bench.harness.timing import measure, run_timed, timed
from gpt.decode.loop import forced_logits, generate
from gpt.decode.sampler import Sampler, SamplingParams

# How far below the reference's best logit a backend's greedy token may be: fp32 backends differ by rounding
# only (1e-5); quantized weights move random-weight logits by tenths.
GREEDY_TOLERANCE = {"ort-int8": 0.5, "ort-int4": 1.0}


def greedy() -> Sampler:
    return Sampler(SamplingParams(temperature=0.0))


def check_greedy(out: np.ndarray, prompt: list[int], reference, backend: str) -> None:
    """Every row of a greedy batch is the same, and each of its tokens is the reference's best (to the
    backend's tolerance) given the tokens before it: the reference is teacher-forced on the backend's ids."""
    assert (out == out[0]).all(), f"{backend}: greedy rows of one batch differ"
    tokens = out[0].tolist()
    tol = GREEDY_TOLERANCE.get(backend, 1e-3)
    for i, (logits, token) in enumerate(zip(forced_logits(reference, prompt, tokens), tokens, strict=True)):
        gap = float(logits[0].max() - logits[0, token])
        assert gap <= tol, f"{backend}: step {i} chose token {token}, {gap:.4f} below the reference's best"


@pytest.mark.parametrize("backend", plan.DECODE_BACKENDS)
def test_decode(benchmark, preset, backend, batch, new_tokens, artifacts, decoders, bench_sizes, threads):
    a = artifacts(preset)
    decoder = decoders(preset, backend)
    c = a.config
    prompt = prompt_ids(bench_sizes.prompt_len)

    def run(n: int = new_tokens):
        if backend == "genai-loop":
            return decoder.generate(prompt, n)
        return generate(decoder, prompt, n, greedy(), num_samples=batch)

    if backend == plan.BASELINE and not bench_sizes.smoke:
        short = min(32, new_tokens)
        out, t_short = run_timed(lambda: run(short))
        assert out.shape == (batch, short)
        check_greedy(out, prompt, decoders(preset, plan.KV_BASELINE), backend)
        cost = lambda n: sum(k for _, k in limits.decode_calls(len(prompt), n, c.block_size))  # noqa: E731
        rounds = plan.rounds_for(t_short * cost(new_tokens) / cost(short), bench_sizes, min_rounds=1)
    else:
        out, t = run_timed(run)
        assert out.shape == (batch, new_tokens)
        check_greedy(out, prompt, decoders(preset, plan.KV_BASELINE), backend)
        if backend == "compiled-kv":
            t = timed(run)
        rounds = plan.rounds_for(t, bench_sizes)

    avg_ctx = limits.average_context(len(prompt), new_tokens, c.block_size)
    weight_bytes = a.weight_bytes(backend)
    benchmark.group = f"decode {preset} batch {batch} prompt {len(prompt)} + {new_tokens} tokens"
    benchmark.extra_info.update(
        kind="decode", preset=preset, backend=backend, batch=batch, prompt_len=len(prompt), new_tokens=new_tokens,
        threads=threads, block_size=c.block_size, n_layer=c.n_layer, n_embd=c.n_embd, n_head=c.n_head,
        num_params=a.num_params, weight_bytes=weight_bytes, avg_context=round(avg_ctx, 2),
        bytes_per_call=limits.decode_bytes_per_call(weight_bytes, c.n_layer, c.n_embd, batch, avg_ctx),
    )
    median = measure(benchmark, run, rounds)
    if median:
        benchmark.extra_info["tokens_per_s"] = round(batch * new_tokens / median, 2)


@pytest.mark.parametrize("backend", plan.DECODE_BACKENDS)
def test_prefill(benchmark, preset, backend, artifacts, decoders, bench_sizes, threads):
    """Time to first token for a full block (batch 1): one forward over block_size tokens, then argmax."""
    a = artifacts(preset)
    c = a.config
    decoder = decoders(preset, backend)
    ids = np.asarray([prompt_ids(c.block_size)], dtype=np.int64)
    sampler = greedy()

    def first_token():
        return sampler(decoder.prefill(ids))

    first_token()
    t = timed(first_token)
    rounds = plan.rounds_for(t, bench_sizes) if bench_sizes.smoke else max(10, min(100, int(1.0 / t)))
    benchmark.group = f"prefill {preset} ({c.block_size} tokens, batch 1)"
    benchmark.extra_info.update(
        kind="prefill", preset=preset, backend=backend, batch=1, tokens=c.block_size, threads=threads,
        flops=limits.forward_flops(c.n_layer, c.n_embd, c.vocab_size, c.block_size, c.block_size),
    )
    median = measure(benchmark, first_token, rounds)
    if median:
        benchmark.extra_info["ms"] = round(median * 1e3, 3)
