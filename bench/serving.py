"""The serving benchmark: `python -m gpt.serve` under C concurrent streaming clients, beside `gpt.sample`'s
batch-1 tokens/s on the same file; then the same work without HTTP through our engine and through
onnxruntime-genai's Engine (bench/engines.py), so the engines compare on equal terms.

    python -m bench.serving --onnx out/model.onnx [--concurrency 1,4,16,64] [--slots 16] [--max-tokens 100]
                            [--requests-per-client 2] [--threads N] [--no-genai] [--out bench/results/NAME]

Prompts are windows of the validation split (the last 10 % of Tiny Shakespeare), all of one length, so that
prompt + max_tokens fits block_size (onnxruntime-genai slides no window). Per concurrency: aggregate output
tok/s, time to first token and inter-token latency p50/p99, requests completed and failed. Then, at 16
streams, the same with one extra client sending block_size prompts all along (`long prompts`): once with
whole-prompt prefill and once with --prefill-chunk. Writes NAME.md (the table), NAME.json and NAME.png
(throughput and p99 latencies against concurrency). onnxruntime-genai's rows need the package and the
genai_config.json that `export.onnx --genai` writes beside the file; without them they are skipped, said so
before anything is measured, and the other rows are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np

from bench.common import cpu_model
from bench.engines import run_ours
from bench.load import LoadResult, run_load, stream_one
from export.genai import CONFIG as GENAI_CONFIG
from gpt.decode.backends.ort_session import default_threads, open_session
from gpt.errors import ArgumentParser, GPTError, run_cli
from gpt.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURE = 0.8


def build_parser() -> ArgumentParser:

    p = ArgumentParser(prog="python -m bench.serving", description=__doc__)
    p.add_argument("--onnx", type=Path, required=True,
                   help="gqa file (exported with --genai for onnxruntime-genai's rows; without, they are skipped)")
    p.add_argument("--concurrency", default="1,4,16,64", help="comma-separated client counts (default 1,4,16,64)")
    p.add_argument("--slots", type=int, default=16, help="server --slots (default 16)")
    p.add_argument("--max-tokens", type=int, default=100, help="new tokens per request (default 100)")
    p.add_argument("--requests-per-client", type=int, default=2, help="requests each client sends in turn")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads everywhere (default: cores)")
    p.add_argument("--prefill-chunk", type=int, default=32, help="chunk for the long-prompt row (default 32)")
    p.add_argument("--no-genai", action="store_true", help="skip onnxruntime-genai's Engine")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "tinyshakespeare" / "input.txt")
    p.add_argument("--out", type=Path, default=None, help="write OUT.md, OUT.json, OUT.png")
    return p


def genai_missing(onnx: Path) -> str | None:
    """Why onnxruntime-genai's Engine cannot run `onnx` (None when it can)."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime_genai") is None:
        return "onnxruntime-genai is not installed (pip install -e '.[genai]')"
    if not (onnx.parent / GENAI_CONFIG).is_file():
        return (f"{onnx.parent / GENAI_CONFIG} is missing (export with `python -m export.onnx --ckpt CKPT --genai` "
                "to write it)")
    return None


def val_prompts(path: Path, vocab: list[str], length: int, count: int, seed: int = 0) -> list[str]:
    if not path.is_file():
        raise GPTError(f"{path} is missing: run `python -m gpt.data` first")
    text = path.read_text()
    val = text[int(0.9 * len(text)):]
    known = set(vocab)
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        start = int(rng.integers(0, len(val) - length))
        window = val[start:start + length]
        if set(window) <= known:
            out.append(window)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(onnx: Path, slots: int, threads: int, *extra: str, replicas: int = 0, seconds: float = 120
           ) -> Iterator[str]:
    """`python -m gpt.serve` in a process group of its own, up when /health answers (and, with `--ray`, lists
    `replicas` replicas); SIGTERM, then SIGKILL to the group (a --ray server's local cluster included)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gpt.serve", "--onnx", str(onnx), "--port", str(port),
                             "--slots", str(slots), "--threads", str(threads), "--max-queue", "1024",
                             "--log-level", "warning", *extra], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + seconds
        while True:
            if proc.poll() is not None:
                raise GPTError(f"gpt.serve exited: {proc.stderr.read()[-300:]}")
            if time.monotonic() > end:
                raise GPTError(f"gpt.serve {' '.join(extra)} was not ready in {seconds:.0f} s")
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"{url}/health", timeout=1)
                if health.status_code == 200 and len(health.json().get("replicas", [])) == replicas:
                    break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def sample_baseline(onnx: Path, max_tokens: int, threads: int, prompt: str, runs: int = 3) -> float:
    """`gpt.sample --backend onnxruntime` batch 1: the median of `runs` tok/s figures it prints."""
    rates = []
    for _ in range(runs):
        r = subprocess.run([sys.executable, "-m", "gpt.sample", "--backend", "onnxruntime", "--onnx", str(onnx),
                            "--prompt", prompt, "--max-new-tokens", str(max_tokens), "--temperature",
                            str(TEMPERATURE), "--threads", str(threads), "--stats"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
        found = re.search(r"\(([\d.]+) tok/s\)", r.stderr)
        if r.returncode != 0 or not found:
            raise GPTError(f"gpt.sample failed: {r.stderr.strip()[-300:]}")
        rates.append(float(found.group(1)))
    return float(np.median(rates))


async def with_long_prompts(url: str, prompts: list[str], long_prompt: str, body: dict, per_client: int) -> LoadResult:
    """16 streams measured while one more client sends block_size prompts (max_tokens 1) until they are done."""
    done = asyncio.Event()

    async def long_client() -> int:
        sent = 0
        async with httpx.AsyncClient(timeout=120) as http:
            while not done.is_set() and sent < 10_000:
                await stream_one(http, url, {**body, "prompt": long_prompt, "max_tokens": 1})
                sent += 1
        return sent

    task = asyncio.create_task(long_client())
    try:
        return await run_load(url, prompts, 16, per_client, body)
    finally:
        done.set()
        await task


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not levels or min(levels) < 1:
        raise GPTError(f"--concurrency must be positive integers, got {args.concurrency!r}")
    threads = args.threads or default_threads()
    _, meta = open_session(args.onnx, threads=1)
    skipped = {} if args.no_genai else {"onnxruntime-genai Engine": genai_missing(args.onnx)}
    skipped = {name: why for name, why in skipped.items() if why}
    for name, why in skipped.items():
        print(f"bench.serving: skipping {name}: {why}; --no-genai skips it without this note", file=sys.stderr)
    prompt_len = meta.block_size - args.max_tokens
    if prompt_len < 1:
        raise GPTError(f"--max-tokens {args.max_tokens} leaves no room for a prompt in block_size {meta.block_size}")
    prompts = val_prompts(args.data, meta.vocab, prompt_len, 256)
    long_prompt = val_prompts(args.data, meta.vocab, meta.block_size, 1, seed=1)[0]
    body = {"model": args.onnx.stem, "max_tokens": args.max_tokens, "temperature": TEMPERATURE}
    report: dict = {"cpu": cpu_model(), "file": str(args.onnx), "slots": args.slots, "threads": threads,
                    "max_tokens": args.max_tokens, "prompt_len": prompt_len, "rows": [], "skipped": skipped}
    print(f"{args.onnx} on {report['cpu']}, {threads} thread(s), {args.slots} slots, prompts {prompt_len} + "
          f"{args.max_tokens} new tokens", file=sys.stderr)
    report["sample_batch1_tok_s"] = sample_baseline(args.onnx, args.max_tokens, threads, prompts[0])
    print(f"gpt.sample batch 1: {report['sample_batch1_tok_s']:.0f} tok/s", file=sys.stderr)
    with server(args.onnx, args.slots, threads) as url:
        asyncio.run(run_load(url, prompts, 2, 1, body))  # warm-up
        for c in levels:
            result = asyncio.run(run_load(url, prompts, c, args.requests_per_client, body))
            row = {"server": "gpt.serve", **result.row()}
            report["rows"].append(row)
            print(json.dumps(row), file=sys.stderr)
        if 16 in levels:
            row = asyncio.run(with_long_prompts(url, prompts, long_prompt, body, args.requests_per_client)).row()
            report["rows"].append({"server": "gpt.serve + long prompts", **row})
            print(json.dumps(report["rows"][-1]), file=sys.stderr)
    if 16 in levels:
        with server(args.onnx, args.slots, threads, "--prefill-chunk", str(args.prefill_chunk)) as url:
            asyncio.run(run_load(url, prompts, 2, 1, body))
            row = asyncio.run(with_long_prompts(url, prompts, long_prompt, body, args.requests_per_client)).row()
            report["rows"].append({"server": f"gpt.serve --prefill-chunk {args.prefill_chunk} + long prompts", **row})
            print(json.dumps(report["rows"][-1]), file=sys.stderr)
    for c in levels:
        result = run_ours(args.onnx, prompts, c, c * args.requests_per_client, args.max_tokens, TEMPERATURE,
                          threads, args.slots)
        report["rows"].append({"server": "gpt.engine in-process", **result.row()})
        print(json.dumps(report["rows"][-1]), file=sys.stderr)
    if not args.no_genai and not skipped:
        from bench.engines import run_genai

        ids = [CharTokenizer(meta.vocab).encode(p) for p in prompts]
        for c in levels:
            result, rows = run_genai(args.onnx, ids, c, c * args.requests_per_client, args.max_tokens, TEMPERATURE,
                                     threads)
            report["rows"].append({"server": "onnxruntime-genai Engine", "rows_per_step": rows, **result.row()})
            print(json.dumps(report["rows"][-1]), file=sys.stderr)
    publish(report, args.out, markdown, plot)
    return 0


def publish(report: dict, out: Path | None, markdown: Callable[[dict], str],
            plot: Callable[[dict, Path], None]) -> None:
    """The report's table on stdout; with `out`, OUT.json (the report), OUT.md (the table) and OUT.png."""
    table = markdown(report)
    print(table)
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(table)
    plot(report, out.with_suffix(".png"))


def markdown(report: dict) -> str:
    base = report["sample_batch1_tok_s"]
    lines = [f"{report['file']} · {report['cpu']} · {report['threads']} thread(s) · {report['slots']} slots · "
             f"prompt {report['prompt_len']} + {report['max_tokens']} new tokens, T={TEMPERATURE} · "
             f"`gpt.sample` batch 1: {base:,.0f} tok/s (step {1e3 / base:.2f} ms)", "",
             "| server | C | requests ok / failed | tok/s | × batch 1 | TTFT p50 / p99 ms | ITL p50 / p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['server']} | {r['concurrency']} | {r['completed']} / {r['failed']} | "
                     f"{r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base:.2f} | {r['ttft_p50_ms']:.1f} / "
                     f"{r['ttft_p99_ms']:.1f} | {r['itl_p50_ms']:.2f} / {r['itl_p99_ms']:.2f} |")
    lines += [f"\n{name}: not run: {why}" for name, why in report.get("skipped", {}).items()]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, style in (("gpt.serve", "o-"), ("gpt.engine in-process", "^-"), ("onnxruntime-genai Engine", "s--")):
        rows = [r for r in report["rows"] if r["server"] == name]
        if not rows:
            continue
        c = [r["concurrency"] for r in rows]
        a.plot(c, [r["tokens_per_s"] for r in rows], style, label=name)
        b.plot(c, [r["ttft_p99_ms"] for r in rows], style, label=f"{name}: TTFT p99")
        b.plot(c, [r["itl_p99_ms"] for r in rows], style, alpha=0.5, label=f"{name}: ITL p99")
    a.axhline(report["sample_batch1_tok_s"], color="gray", ls=":", label="gpt.sample batch 1")
    a.set(xscale="log", xlabel="concurrent streams", ylabel="output tokens/s", title="throughput")
    b.set(xscale="log", yscale="log", xlabel="concurrent streams", ylabel="ms", title="p99 latency")
    for ax in (a, b):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{Path(report['file']).name} · {report['cpu']} · {report['threads']} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    run_cli(main)
