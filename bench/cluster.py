"""Serving on a cluster, measured on one machine: `python -m gpt.serve --ray` (Ray Serve's proxy in front of
replicas of our engine, one process each) beside the single-process server, at the same load.

    python -m bench.cluster --onnx out/model.onnx [--streams 16] [--replicas 2] [--max-tokens 100]
                            [--requests-per-client 4] [--out bench/results/NAME]

Rows, each C = --streams streaming clients (bench/harness/load.py; prompts from the validation split, T 0.8):
  gpt.serve                      one process, --threads = the cores
  ray, 1 replica x 1 thread      the proxy's hop with one engine
  ray, R replicas x 1 thread     R engines (R = --replicas, default the cores)
  the same, --stream-interval 0  a chunk whenever the loop comes round, as gpt.serve sends them
With each Ray row, the proxy process's CPU seconds (user + system, from /proc) during the run, less what it
spends idle (measured for 5 s before), per request and per streamed chunk: one proxy core carries
1 / (CPU per request) requests a second. And the proxy's added hop: the median latency of --probes sequential
`max_tokens: 1` requests through Ray (1 replica) minus gpt.serve (1 thread).
Writes NAME.md (bench/reports/cluster.py), NAME.json and NAME.png (throughput per configuration, the proxy's
CPU per request).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

from bench.harness.cli import add_options, command
from bench.harness.load import LoadResult
from bench.harness.machine import cpu_model
from bench.harness.results_files import publish, stamp
from bench.harness.server import Workload, server, workload
from bench.reports.cluster import markdown, plot, proxy_fit
from gpt.decode.backends.ort_session import default_threads
from gpt.errors import ArgumentParser, GPTError, run_cli
from gpt.serve.options import RAY_STREAM_INTERVAL

IDLE_S = 5.0  # seconds the proxy's idle CPU is measured before each Ray row


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    add_options(p, onnx="gqa file", text=True, out="write OUT.md, OUT.json and OUT.png")
    p.add_argument("--streams", type=int, default=16, help="concurrent streaming clients (default 16)")
    p.add_argument("--replicas", type=int, default=None, help="replicas of the last row (default: the cores)")
    p.add_argument("--slots", type=int, default=16, help="--slots of every engine (default 16)")
    p.add_argument("--max-tokens", type=int, default=100, help="new tokens per request (default 100)")
    p.add_argument("--requests-per-client", type=int, default=4, help="requests each client sends in turn")
    p.add_argument("--probes", type=int, default=200, help="sequential 1-token requests for the hop (default 200)")
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


def row(name: str, result: LoadResult, **extra: float) -> dict:
    out = {"server": name, **result.row(), **extra}
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def ray_row(args: argparse.Namespace, w: Workload, replicas: int, interval: float | None) -> dict:
    """`--streams` clients through Ray Serve's proxy to `replicas` one-thread engines, with the proxy's CPU seconds
    during the run less what it spends idle (polling, metrics), measured for IDLE_S before."""
    extra = () if interval is None else ("--stream-interval", str(interval))
    with server(args.onnx, args.slots, 1, "--ray", "--replicas", str(replicas), *extra, replicas=replicas) as url:
        w.warm_up(url)
        pids = proxy_pids()
        idle = sum(cpu_seconds(p) for p in pids)
        time.sleep(IDLE_S)
        before = sum(cpu_seconds(p) for p in pids)
        idle_rate = (before - idle) / IDLE_S
        result = w.load(url, args.streams, args.requests_per_client)
        proxy_cpu = sum(cpu_seconds(p) for p in pids) - before - idle_rate * result.wall_s
    chunks = sum(len(r.gaps) + 1 for r in result.results if r.ok)
    shown = RAY_STREAM_INTERVAL if interval is None else interval
    return row(f"ray, {replicas} replica{'s' * (replicas > 1)} x 1 thread, --stream-interval {shown:g}", result,
               proxy_cpu_s=proxy_cpu, proxy_idle_cpu_per_s=idle_rate, chunks=chunks)


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    cores = default_threads()
    replicas = args.replicas or cores
    for name in ("streams", "replicas", "slots", "max_tokens", "requests_per_client", "probes"):
        if (getattr(args, name) or 1) < 1:
            raise GPTError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    w = workload(args.onnx, args.data, args.max_tokens)
    report: dict = stamp({"cpu": cpu_model(), "cores": cores, "file": str(args.onnx), "streams": args.streams,
                          "slots": args.slots, "max_tokens": args.max_tokens, "prompt_len": w.prompt_len,
                          "rows": []}, command(p, argv))
    print(f"{args.onnx} on {report['cpu']} ({cores} cores): {args.streams} streams, prompts {w.prompt_len} + "
          f"{args.max_tokens} new tokens", file=sys.stderr)
    with server(args.onnx, args.slots, cores) as url:
        w.warm_up(url)
        report["rows"].append(row(f"gpt.serve, 1 process x {cores} threads",
                                  w.load(url, args.streams, args.requests_per_client)))
    with server(args.onnx, args.slots, 1) as url:
        direct_ms = hop_ms(url, w.body, w.prompts[0], args.probes)
    with server(args.onnx, args.slots, 1, "--ray", "--replicas", "1", replicas=1) as url:
        ray_ms = hop_ms(url, w.body, w.prompts[0], args.probes)
    report["hop"] = {"direct_1_token_ms": direct_ms, "ray_1_token_ms": ray_ms, "hop_ms": ray_ms - direct_ms}
    for n, interval in ((1, None), (replicas, None), (replicas, 0.0)):
        report["rows"].append(ray_row(args, w, n, interval))
    report["proxy_fit"] = proxy_fit(report)
    publish(report, args.out, markdown(report), lambda png: plot(report, png))
    return 0


if __name__ == "__main__":
    run_cli(main)
