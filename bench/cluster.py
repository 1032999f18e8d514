"""Serving on a cluster, measured on one machine: `python -m gpt.serve --ray` (Ray Serve's proxy in front of
replicas of our engine, one process each) beside the single-process server, at the same load.

    python -m bench.cluster --onnx out/model.onnx [--streams 16] [--replicas 2] [--max-tokens 100]
                            [--requests-per-client 4] [--out bench/results/NAME]

Rows, each C = --streams streaming clients (bench/load.py; prompts from the validation split, T 0.8):
  gpt.serve                      one process, --threads = the cores
  ray, 1 replica x 1 thread      the proxy's hop with one engine
  ray, R replicas x 1 thread     R engines (R = --replicas, default the cores)
  the same, --stream-interval 0  a chunk whenever the loop comes round, as gpt.serve sends them
With each Ray row, the proxy process's CPU seconds (user + system, from /proc) during the run, less what it
spends idle (measured for 5 s before), per request and per streamed chunk: one proxy core carries
1 / (CPU per request) requests a second. And the proxy's added hop: the median latency of --probes sequential
`max_tokens: 1` requests through Ray (1 replica) minus gpt.serve (1 thread).
Writes NAME.md, NAME.json and NAME.png (throughput per configuration, the proxy's CPU per request).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

from bench.common import cpu_model
from bench.load import LoadResult, run_load
from bench.results_files import command_line, stamp
from bench.serving import ROOT, TEMPERATURE, publish, server, val_prompts
from gpt.decode.backends.ort_session import default_threads, open_session
from gpt.errors import ArgumentParser, GPTError, run_cli
from gpt.serve.options import RAY_STREAM_INTERVAL

IDLE_S = 5.0  # seconds the proxy's idle CPU is measured before each Ray row


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    p.add_argument("--onnx", type=Path, required=True, help="gqa file")
    p.add_argument("--streams", type=int, default=16, help="concurrent streaming clients (default 16)")
    p.add_argument("--replicas", type=int, default=None, help="replicas of the last row (default: the cores)")
    p.add_argument("--slots", type=int, default=16, help="--slots of every engine (default 16)")
    p.add_argument("--max-tokens", type=int, default=100, help="new tokens per request (default 100)")
    p.add_argument("--requests-per-client", type=int, default=4, help="requests each client sends in turn")
    p.add_argument("--probes", type=int, default=200, help="sequential 1-token requests for the hop (default 200)")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "tinyshakespeare" / "input.txt")
    p.add_argument("--out", type=Path, default=None, help="write OUT.md and OUT.json")
    return p


def proxy_pids() -> list[int]:
    """The Ray Serve HTTP proxies on this machine (`ray::ProxyActor`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::ProxyActor"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def hop_ms(url: str, body: dict, prompt: str, probes: int) -> float:
    """The median wall time of `probes` sequential non-streamed 1-token requests."""
    times = []
    with httpx.Client(timeout=60) as http:
        for _ in range(probes):
            start = time.perf_counter()
            r = http.post(f"{url}/v1/completions", json={**body, "prompt": prompt, "max_tokens": 1})
            if r.status_code != 200:
                raise GPTError(f"probe failed: HTTP {r.status_code} {r.text[:200]}")
            times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def row(name: str, result: LoadResult, **extra) -> dict:
    out = {"server": name, **result.row(), **extra}
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cores = default_threads()
    replicas = args.replicas or cores
    for name in ("streams", "replicas", "slots", "max_tokens", "requests_per_client", "probes"):
        if (getattr(args, name) or 1) < 1:
            raise GPTError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    _, meta = open_session(args.onnx, threads=1)
    prompt_len = meta.block_size - args.max_tokens
    if prompt_len < 1:
        raise GPTError(f"--max-tokens {args.max_tokens} leaves no room for a prompt in block_size {meta.block_size}")
    prompts = val_prompts(args.data, meta.vocab, prompt_len, 256)
    body = {"model": args.onnx.stem, "max_tokens": args.max_tokens, "temperature": TEMPERATURE}
    report: dict = stamp({"cpu": cpu_model(), "cores": cores, "file": str(args.onnx), "streams": args.streams,
                    "slots": args.slots, "max_tokens": args.max_tokens, "prompt_len": prompt_len, "rows": []},
                         command_line("python -m bench.cluster", list(sys.argv[1:] if argv is None else argv)))
    print(f"{args.onnx} on {report['cpu']} ({cores} cores): {args.streams} streams, prompts {prompt_len} + "
          f"{args.max_tokens} new tokens", file=sys.stderr)

    def load(url: str) -> LoadResult:
        asyncio.run(run_load(url, prompts, 2, 1, body))  # warm-up
        return asyncio.run(run_load(url, prompts, args.streams, args.requests_per_client, body))

    with server(args.onnx, args.slots, cores) as url:
        report["rows"].append(row(f"gpt.serve, 1 process x {cores} threads", load(url)))
    with server(args.onnx, args.slots, 1) as url:
        direct_ms = hop_ms(url, body, prompts[0], args.probes)
    with server(args.onnx, args.slots, 1, "--ray", "--replicas", "1", replicas=1) as url:
        ray_ms = hop_ms(url, body, prompts[0], args.probes)
    report["hop"] = {"direct_1_token_ms": direct_ms, "ray_1_token_ms": ray_ms, "hop_ms": ray_ms - direct_ms}
    for n, interval in ((1, None), (replicas, None), (replicas, 0.0)):
        extra = () if interval is None else ("--stream-interval", str(interval))
        with server(args.onnx, args.slots, 1, "--ray", "--replicas", str(n), *extra, replicas=n) as url:
            asyncio.run(run_load(url, prompts, 2, 1, body))  # warm-up
            pids = proxy_pids()
            idle = sum(cpu_seconds(p) for p in pids)
            time.sleep(IDLE_S)
            before = sum(cpu_seconds(p) for p in pids)
            idle_rate = (before - idle) / IDLE_S  # what the proxy spends with no request (polling, metrics)
            result = asyncio.run(run_load(url, prompts, args.streams, args.requests_per_client, body))
            proxy_cpu = sum(cpu_seconds(p) for p in pids) - before - idle_rate * result.wall_s
        chunks = sum(len(r.gaps) + 1 for r in result.results if r.ok)
        shown = RAY_STREAM_INTERVAL if interval is None else interval
        report["rows"].append(row(f"ray, {n} replica{'s' * (n > 1)} x 1 thread, --stream-interval {shown:g}", result,
                                  proxy_cpu_s=proxy_cpu, proxy_idle_cpu_per_s=idle_rate, chunks=chunks))
    publish(report, args.out, markdown, plot)
    return 0


def markdown(report: dict) -> str:
    base = report["rows"][0]["tokens_per_s"]
    lines = [f"{report['file']} · {report['cpu']} ({report['cores']} cores) · {report['streams']} streams · "
             f"{report['slots']} slots per engine · prompt {report['prompt_len']} + {report['max_tokens']} new "
             f"tokens, T={TEMPERATURE}", "",
             "| server | requests ok / failed | tok/s | × gpt.serve | TTFT p50 / p99 ms | ITL p50 / p99 ms | "
             "chunks | proxy CPU s | proxy CPU per request / per chunk |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        proxy = "| | | |"
        if "proxy_cpu_s" in r:
            proxy = (f"| {r['chunks']:,} | {r['proxy_cpu_s']:.2f} | {1e3 * r['proxy_cpu_s'] / r['requests']:.1f} ms / "
                     f"{1e6 * r['proxy_cpu_s'] / max(r['chunks'], 1):.0f} us |")
        lines.append(f"| {r['server']} | {r['completed']} / {r['failed']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['tokens_per_s'] / base:.2f} | {r['ttft_p50_ms']:.1f} / {r['ttft_p99_ms']:.1f} | "
                     f"{r['itl_p50_ms']:.2f} / {r['itl_p99_ms']:.2f} {proxy}")
    a, b = report["rows"][-2:]  # the same requests, fewer and more chunks: proxy CPU = per request + per chunk
    per_chunk = (b["proxy_cpu_s"] - a["proxy_cpu_s"]) / max(b["chunks"] - a["chunks"], 1)
    per_request = (a["proxy_cpu_s"] - per_chunk * a["chunks"]) / a["requests"]
    report["proxy_fit"] = {"cpu_ms_per_request": 1e3 * per_request, "cpu_us_per_chunk": 1e6 * per_chunk}
    lines += ["", f"The proxy's CPU, fitted to the last two rows (same requests, {a['chunks']:,} vs {b['chunks']:,} "
              f"chunks): {1e3 * per_request:.1f} ms a request + {1e6 * per_chunk:.0f} us a chunk; one proxy core "
              f"carries about {1 / max(per_request + per_chunk * a['chunks'] / a['requests'], 1e-9):,.0f} requests/s "
              f"like these at --stream-interval {RAY_STREAM_INTERVAL:g}."]
    h = report["hop"]
    lines += ["", f"The proxy's hop: a 1-token request takes {h['ray_1_token_ms']:.2f} ms through Ray (1 replica) vs "
              f"{h['direct_1_token_ms']:.2f} ms from gpt.serve (median of sequential requests): "
              f"+{h['hop_ms']:.2f} ms a request."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Throughput per configuration beside the proxy's CPU: where a cluster's tokens go on one machine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    names = [r["server"].replace(", --stream-interval", "\n--stream-interval").replace(", 1 process", "\n1 process")
             for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    bars = a.barh(names, [r["tokens_per_s"] for r in rows], color=["#4c72b0"] + ["#dd8452"] * (len(rows) - 1))
    for bar, r in zip(bars, rows, strict=True):
        a.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r['tokens_per_s']:,.0f} tok/s, TTFT p99 "
               f"{r['ttft_p99_ms']:.0f} ms", va="center", fontsize=7)
    a.invert_yaxis()
    top = max(r["tokens_per_s"] for r in rows)
    a.set(xlabel="output tokens/s", title=f"{report['streams']} streams", xlim=(0, 1.6 * top))
    ray = [r for r in rows if "proxy_cpu_s" in r]
    labels = [r["server"].removeprefix("ray, ").replace(" x 1 thread, --stream-interval ", "\ninterval ")
              + f"\n{r['chunks']:,} chunks" for r in ray]
    b.bar(labels, [1e3 * r["proxy_cpu_s"] / r["requests"] for r in ray], color="#c44e52")
    fit = report["proxy_fit"]
    b.set(ylabel="proxy CPU ms per request", title=f"Ray's proxy CPU: {fit['cpu_ms_per_request']:.1f} ms a request\n"
          f"+ {fit['cpu_us_per_chunk']:.0f} us a chunk")
    b.tick_params(axis="x", labelsize=7)
    for ax in (a, b):
        ax.grid(alpha=0.3, axis="x" if ax is a else "y")
    fig.suptitle(f"{Path(report['file']).name} · {report['cpu']} ({report['cores']} cores) · prompt "
                 f"{report['prompt_len']} + {report['max_tokens']} tokens", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    run_cli(main)
