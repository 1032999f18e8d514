"""The serving benchmark: `python -m gpt.serve` under C concurrent streaming clients, beside `gpt.sample`'s
batch-1 tokens/s on the same file; then the same work without HTTP through our engine and through
onnxruntime-genai's Engine (bench/harness/engines.py), so the engines compare on equal terms.

    python -m bench.serving --onnx out/model.onnx [--concurrency 1,4,16,64] [--slots 16] [--max-tokens 100]
                            [--requests-per-client 2] [--threads N] [--no-genai] [--out bench/results/NAME]

Prompts are windows of the validation split (the last 10 % of Tiny Shakespeare), all of one length, so that
prompt + max_tokens fits block_size (onnxruntime-genai slides no window). Per concurrency: aggregate output
tok/s, time to first token and inter-token latency p50/p99, requests completed and failed. Then, at 16
streams, the same with one extra client sending block_size prompts all along (`long prompts`): once with
whole-prompt prefill and once with --prefill-chunk. Writes NAME.md (the table, bench/reports/serving.py),
NAME.json and NAME.png (throughput and p99 latencies against concurrency). onnxruntime-genai's rows need the
package and the genai_config.json that `export.onnx --genai` writes beside the file; without them they are
skipped, said so before anything is measured, and the other rows are written.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

from bench.harness.cli import add_options
from bench.harness.engines import run_genai, run_ours
from bench.harness.genai import genai_missing
from bench.harness.load import LoadResult, run_load, stream_one
from bench.harness.machine import ROOT, cpu_model
from bench.harness.plan import SERVING_TEMPERATURE
from bench.harness.results_files import publish
from bench.harness.server import Workload, server, val_prompts, workload
from bench.reports.serving import markdown, plot
from gpt.decode.backends.ort_session import default_threads
from gpt.errors import ArgumentParser, GPTError, run_cli
from gpt.tokenizer import CharTokenizer


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m bench.serving", description=__doc__)
    add_options(p, onnx="gqa file (exported with --genai for onnxruntime-genai's rows; without, they are skipped)",
                threads="onnxruntime threads everywhere (default: cores)", text=True,
                out="write OUT.md, OUT.json, OUT.png")
    p.add_argument("--concurrency", default="1,4,16,64", help="comma-separated client counts (default 1,4,16,64)")
    p.add_argument("--slots", type=int, default=16, help="server --slots (default 16)")
    p.add_argument("--max-tokens", type=int, default=100, help="new tokens per request (default 100)")
    p.add_argument("--requests-per-client", type=int, default=2, help="requests each client sends in turn")
    p.add_argument("--prefill-chunk", type=int, default=32, help="chunk for the long-prompt row (default 32)")
    p.add_argument("--no-genai", action="store_true", help="skip onnxruntime-genai's Engine")
    return p


def sample_baseline(onnx: Path, max_tokens: int, threads: int, prompt: str, runs: int = 3) -> float:
    """`gpt.sample --backend onnxruntime` batch 1: the median of `runs` tok/s figures it prints."""
    rates = []
    for _ in range(runs):
        r = subprocess.run([sys.executable, "-m", "gpt.sample", "--backend", "onnxruntime", "--onnx", str(onnx),
                            "--prompt", prompt, "--max-new-tokens", str(max_tokens), "--temperature",
                            str(SERVING_TEMPERATURE), "--threads", str(threads), "--stats"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
        found = re.search(r"\(([\d.]+) tok/s\)", r.stderr)
        if r.returncode != 0 or not found:
            raise GPTError(f"gpt.sample failed: {r.stderr.strip()[-300:]}")
        rates.append(float(found.group(1)))
    return float(np.median(rates))


async def with_long_prompts(url: str, w: Workload, long_prompt: str, per_client: int) -> LoadResult:
    """16 streams measured while one more client sends block_size prompts (max_tokens 1) until they are done."""
    done = asyncio.Event()

    async def long_client() -> int:
        sent = 0
        async with httpx.AsyncClient(timeout=120) as http:
            while not done.is_set() and sent < 10_000:
                await stream_one(http, url, {**w.body, "prompt": long_prompt, "max_tokens": 1})
                sent += 1
        return sent

    task = asyncio.create_task(long_client())
    try:
        return await run_load(url, w.prompts, 16, per_client, w.body)
    finally:
        done.set()
        await task


def add_row(report: dict, server_name: str, result: LoadResult, **extra: float) -> None:
    report["rows"].append({"server": server_name, **extra, **result.row()})
    print(json.dumps(report["rows"][-1]), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not levels or min(levels) < 1:
        raise GPTError(f"--concurrency must be positive integers, got {args.concurrency!r}")
    threads = args.threads or default_threads()
    w = workload(args.onnx, args.data, args.max_tokens)
    skipped = {} if args.no_genai else {"onnxruntime-genai Engine": genai_missing(args.onnx)}
    skipped = {name: why for name, why in skipped.items() if why}
    for name, why in skipped.items():
        print(f"bench.serving: skipping {name}: {why}; --no-genai skips it without this note", file=sys.stderr)
    long_prompt = val_prompts(args.data, w.meta.vocab, w.meta.block_size, 1, seed=1)[0]
    per_client = args.requests_per_client
    report: dict = {"cpu": cpu_model(), "file": str(args.onnx), "slots": args.slots, "threads": threads,
                    "max_tokens": args.max_tokens, "prompt_len": w.prompt_len, "rows": [], "skipped": skipped}
    print(f"{args.onnx} on {report['cpu']}, {threads} thread(s), {args.slots} slots, prompts {w.prompt_len} + "
          f"{args.max_tokens} new tokens", file=sys.stderr)
    report["sample_batch1_tok_s"] = sample_baseline(args.onnx, args.max_tokens, threads, w.prompts[0])
    print(f"gpt.sample batch 1: {report['sample_batch1_tok_s']:.0f} tok/s", file=sys.stderr)
    with server(args.onnx, args.slots, threads) as url:
        w.warm_up(url)
        for c in levels:
            add_row(report, "gpt.serve", w.load(url, c, per_client))
        if 16 in levels:
            add_row(report, "gpt.serve + long prompts", asyncio.run(with_long_prompts(url, w, long_prompt,
                                                                                      per_client)))
    if 16 in levels:
        with server(args.onnx, args.slots, threads, "--prefill-chunk", str(args.prefill_chunk)) as url:
            w.warm_up(url)
            add_row(report, f"gpt.serve --prefill-chunk {args.prefill_chunk} + long prompts",
                    asyncio.run(with_long_prompts(url, w, long_prompt, per_client)))
    for c in levels:
        add_row(report, "gpt.engine in-process", run_ours(args.onnx, w.prompts, c, c * per_client, args.max_tokens,
                                                          SERVING_TEMPERATURE, threads, args.slots))
    if not args.no_genai and not skipped:
        ids = [CharTokenizer(w.meta.vocab).encode(p) for p in w.prompts]
        for c in levels:
            result, rows = run_genai(args.onnx, ids, c, c * per_client, args.max_tokens, SERVING_TEMPERATURE, threads)
            add_row(report, "onnxruntime-genai Engine", result, rows_per_step=rows)
    publish(report, args.out, markdown(report), lambda png: plot(report, png))
    return 0


if __name__ == "__main__":
    run_cli(main)
