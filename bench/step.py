"""The engine's decode step against onnxruntime-genai's own generator, same file, same work, interleaved.

    python -m bench.step --onnx out/model.onnx [--threads 1] [--batch 1 16] [--rounds 5]

Work per round, for `batch` rows: a 1-token prompt per row, then one step per context 2 .. block_size - 1
(the step at context c feeds the token at position c - 1 and attends over c positions), each step sampling
one token per row at temperature 0.8 (no top-k, no top-p).

    engine  SlotRunner.decode_sampled(tokens, lengths, batch, temperature, uniform) with one uniform per row from
            the row's own draws (gpt.decode.sampler.Uniforms), as gpt.engine.core does: the run samples too (the
            sampling head of gpt.decode.sampler_graph; prefill: SlotRunner.prefill per row)
    genai   og.Generator on the same file with its genai_config.json (GeneratorParams batch_size = batch,
            do_sample, temperature 0.8, top_k 0, min_length = max_length = block_size so its end token never
            stops a row): append_tokens of the [batch, 1] prompt, then generate_next_token() until is_done().
            Its first call only samples the prompt's logits; each later call runs the model on the last token
            and samples: call c is the step at context c.

Each step is timed alone (perf_counter_ns around decode + sample, or around generate_next_token). The two
alternate, round by round (engine, genai, engine, genai, ...), after one warm-up round each. A bucket's
figure is the median over rounds of that round's mean µs/step over the bucket's contexts; `speed` is
genai / engine, the median over rounds of the pair's ratio (>= 1.00x: the engine's step is at least as fast).

Output (one table per batch; µs per step, i.e. per batch of `batch` tokens):

    step: FILE (n_layer x n_head x n_embd, block B, V vocab), threads T, 5 rounds, CPU MODEL
    batch  contexts   engine µs  genai µs  speed
    1      2-127      312.4      280.1     0.90x
    1      2-16       ...
    1      56-72      ...
    1      112-127    ...
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from bench.harness.cli import add_options
from bench.harness.genai import genai_missing, open_genai
from bench.harness.machine import cpu_model
from gpt.errors import ArgumentParser, GPTError, run_cli

TEMPERATURE = 0.8


def buckets(block_size: int) -> list[tuple[int, int]]:
    """(first, last) contexts: all of them, the start, the middle and the end of the block."""
    last = block_size - 1
    mid = block_size // 2
    return [(2, last), (2, 16), (mid - 8, mid + 8), (last - 15, last)]


class EngineLoop:
    """The engine's step; with `numpy_sampler`, as it was before the graph sampled: SlotRunner.decode's logits
    sampled by gpt.decode.sampler.sample_tokens (the same tokens)."""

    def __init__(self, path: Path, batch: int, threads: int, numpy_sampler: bool = False):
        from gpt.engine.runner import SlotRunner

        self.runner = SlotRunner(path, batch, threads)
        self.batch, self.block_size, self.numpy_sampler = batch, self.runner.block_size, numpy_sampler

    def round(self, seed: int) -> np.ndarray:
        """µs of each step, indexed by context (0 and 1 unused)."""
        from gpt.decode.sampler import Uniforms, next_draws, sample_tokens

        B, runner = self.batch, self.runner
        draws = [Uniforms(np.random.default_rng(seed + b), greedy=False) for b in range(B)]
        temperature, top_k, top_p = np.full(B, TEMPERATURE), np.zeros(B, dtype=np.int64), np.ones(B)
        for b in range(B):
            runner.prefill(b, np.array([1], dtype=np.int64), 0)
        tokens = np.ones(B, dtype=np.int64)
        lengths = np.ones(B, dtype=np.int64)
        times = np.zeros(self.block_size)
        clock = time.perf_counter_ns
        for context in range(2, self.block_size):
            t0 = clock()
            uniform = next_draws(draws)  # as gpt.engine.core spends them
            if self.numpy_sampler:
                tokens = sample_tokens(runner.decode(tokens, lengths, B), temperature, top_k, top_p, uniform)
            else:
                tokens = runner.decode_sampled(tokens, lengths, B, temperature, uniform)
            t1 = clock()
            lengths += 1
            times[context] = (t1 - t0) / 1e3
        return times


class GenaiLoop:
    def __init__(self, path: Path, batch: int, threads: int, block_size: int):
        why = genai_missing(path)
        if why:
            raise GPTError(f"bench.step times onnxruntime-genai beside the engine: {why}")
        self.og, self.model = open_genai(path, threads)
        self.batch, self.block_size = batch, block_size

    def round(self, seed: int) -> np.ndarray:
        og, B, T = self.og, self.batch, self.block_size
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=T, min_length=T, do_sample=True, temperature=TEMPERATURE, top_k=0,
                                  top_p=1.0, batch_size=B, random_seed=seed)
        generator = og.Generator(self.model, params)
        generator.append_tokens(np.ones((B, 1), dtype=np.int32))
        generator.generate_next_token()  # samples the prompt's logits: no model run
        times = np.zeros(T)
        clock = time.perf_counter_ns
        for context in range(2, T):
            t0 = clock()
            generator.generate_next_token()
            t1 = clock()
            times[context] = (t1 - t0) / 1e3
        if not generator.is_done():
            raise GPTError("onnxruntime-genai's generator is not done at block_size: the work differs")
        return times


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.step", description=__doc__)
    add_options(p, onnx="a gqa file with genai_config.json beside it",
                threads="intra-op threads of both sessions (default 1)", threads_default=1)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16], help="rows per step (default: 1 16)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved pairs after one warm-up each (default 5)")
    args = p.parse_args(argv)
    if args.rounds < 1 or min(args.batch) < 1:
        raise GPTError("--rounds and --batch must be >= 1")
    from gpt.decode.backends.ort_session import open_session

    _, meta = open_session(args.onnx, threads=1)
    print(f"step: {args.onnx} ({meta.n_layer} x {meta.n_head} x {meta.n_embd}, block {meta.block_size}, "
          f"{len(meta.vocab)} vocab), threads {args.threads}, {args.rounds} rounds, {cpu_model()}")
    print(f"{'batch':<6} {'contexts':<10} {'engine µs':>10} {'genai µs':>10} {'speed':>7}")
    for batch in args.batch:
        engine = EngineLoop(args.onnx, batch, args.threads)
        genai = GenaiLoop(args.onnx, batch, args.threads, meta.block_size)
        engine.round(0), genai.round(0)  # warm-up
        ours, theirs = [], []
        for r in range(args.rounds):
            ours.append(engine.round(r + 1))
            theirs.append(genai.round(r + 1))
        for lo, hi in buckets(meta.block_size):
            e = [float(t[lo:hi + 1].mean()) for t in ours]
            g = [float(t[lo:hi + 1].mean()) for t in theirs]
            speed = statistics.median(b / a for a, b in zip(e, g, strict=True))
            print(f"{batch:<6} {f'{lo}-{hi}':<10} {statistics.median(e):>10.1f} {statistics.median(g):>10.1f} "
                  f"{speed:>6.2f}x", flush=True)
        del engine, genai
    return 0


if __name__ == "__main__":
    run_cli(main)
