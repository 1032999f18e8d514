"""The scoreboard's decoders side by side: PyTorch eager with a KV cache, onnxruntime fp32 / int8 / int4 and
onnxruntime-genai's own loop, on the demo's model, every one in each round (bench.speculative's interleaving,
`time_batch1`), so that their ratios compare figures taken under the same load. The int8 and int4 files are
quantized from the fp32 one with export.quantize's schemes, in the run's scratch folder.

A decoder that cannot be opened here (no torch, no onnxruntime-genai or its genai_config.json) is left out and
its entry says why; the others are still measured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bench.harness.genai import genai_missing
from bench.harness.models import GenaiLoop
from bench.harness.server import val_prompts
from bench.speculative import Runner, time_batch1
from gpt.decode.loop import Decoder, generate
from gpt.decode.sampler import Sampler, SamplingParams
from gpt.tokenizer import CharTokenizer

if TYPE_CHECKING:
    from bench.harness.scoreboard_rows import Context


def _ours(decoder: Decoder, tokens: int) -> Callable[[list[int], float, int], list[int]]:
    return lambda ids, t, seed: generate(decoder, ids, tokens, Sampler(SamplingParams(t, seed=seed)))[0].tolist()


def open_decoders(ctx: Context) -> tuple[dict[str, object], dict[str, str]]:
    """({name: a decoder}, {name: why it cannot run})."""
    from gpt.decode.backends import open_decoder

    opened: dict[str, object] = {}
    missing: dict[str, str] = {}
    try:
        opened["eager-kv"] = open_decoder("torch", ctx.ckpt, threads=ctx.threads, use_cache=True)
    except (ImportError, OSError, ValueError) as e:
        missing["eager-kv"] = f"PyTorch cannot open {ctx.ckpt}: {e}"
    opened["ort-fp32"] = open_decoder("onnxruntime", ctx.onnx, threads=ctx.threads)
    try:
        from export.quantize import SCHEMES, quantize

        for kind in ("int8", "int4"):
            path = ctx.scratch / f"model.{kind}.onnx"
            quantize(ctx.onnx, path, SCHEMES[kind])
            opened[f"ort-{kind}"] = open_decoder("onnxruntime", path, threads=ctx.threads)
    except ImportError as e:
        missing |= {k: f"cannot quantize here: {e}" for k in ("ort-int8", "ort-int4") if k not in opened}
    why = genai_missing(ctx.onnx)
    if why:
        missing["genai-loop"] = why
    else:
        opened["genai-loop"] = GenaiLoop(ctx.onnx, ctx.threads)
    return opened, missing


def measure(ctx: Context) -> dict[str, list[float] | str]:
    """{decoder: characters/s per round, or why it was not measured}; one warm-up round first, not counted."""
    opened, missing = open_decoders(ctx)
    fp32 = opened["ort-fp32"]
    prompt_len = min(64, fp32.block_size // 2)
    text = val_prompts(ctx.data, fp32.vocab, prompt_len, 1)[0]
    prompt = CharTokenizer(fp32.vocab).encode(text)
    tokens = ctx.budget.tokens
    runners = [Runner(name, (lambda ids, t, seed, d=d: d.generate(ids, tokens)[0].tolist()) if name == "genai-loop"
                      else _ours(d, tokens)) for name, d in opened.items()]
    time_batch1(runners, [prompt], 1, 0.0)
    rates = time_batch1(runners, [prompt], ctx.budget.rounds, 0.0)
    ctx.shared["decode_prompt_len"] = prompt_len
    return {**rates, **missing}
