"""A load generator for an OpenAI-compatible completions server, measured as vLLM's `benchmark_serving` measures:
C concurrent streaming clients, each sending its requests one after another; per request the time to first
token (TTFT) and the gaps between streamed tokens (inter-token latency, ITL); aggregate output tokens/s over the
wall time of the whole run. Every loop is bounded in count and time. Loopback servers only."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
import numpy as np


@dataclass
class RequestResult:
    ok: bool
    sent: float = float("nan")  # perf_counter() when the request went out
    tokens: int = 0
    ttft: float = float("nan")
    gaps: list[float] = field(default_factory=list)
    error: str = ""
    last: float | None = None  # when its latest chunk arrived

    def arrived(self, now: float, tokens: int) -> None:
        """A chunk of `tokens` tokens at `now`: the first sets the time to first token, each later one adds the gap
        since the one before (inter-token latency)."""
        if self.last is None:
            self.ttft = now - self.sent
        else:
            self.gaps.append(now - self.last)
        self.last = now
        self.tokens += tokens


@dataclass
class LoadResult:
    concurrency: int
    wall_s: float
    results: list[RequestResult]

    @property
    def completed(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.completed

    @property
    def tokens_per_s(self) -> float:
        return sum(r.tokens for r in self.results if r.ok) / self.wall_s

    def ttft(self, q: float) -> float:
        values = [r.ttft for r in self.results if r.ok]
        return float(np.percentile(values, q)) if values else float("nan")

    def itl(self, q: float) -> float:
        values = [g for r in self.results if r.ok for g in r.gaps]
        return float(np.percentile(values, q)) if values else float("nan")

    def row(self) -> dict:
        return {"concurrency": self.concurrency, "requests": len(self.results), "completed": self.completed,
                "failed": self.failed, "tokens_per_s": self.tokens_per_s, "ttft_p50_ms": 1e3 * self.ttft(50),
                "ttft_p99_ms": 1e3 * self.ttft(99), "itl_p50_ms": 1e3 * self.itl(50), "itl_p99_ms": 1e3 * self.itl(99),
                "wall_s": self.wall_s}


async def stream_one(http: httpx.AsyncClient, url: str, body: dict) -> RequestResult:
    result = RequestResult(ok=False, sent=time.perf_counter())
    try:
        async with http.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as r:
            if r.status_code != 200:
                result.error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return result
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    result.ok = result.error == ""
                    break
                event = json.loads(line[6:])
                if "error" in event:
                    result.error = event["error"]["message"]
                    continue
                text = event["choices"][0]["text"] if event["choices"] else ""
                if text:
                    result.arrived(time.perf_counter(), len(text))
    except httpx.HTTPError as e:
        result.error = f"{type(e).__name__}: {e}"
    return result


async def run_load(url: str, prompts: list[str], concurrency: int, per_client: int, body: dict,
                   timeout_s: float = 600) -> LoadResult:
    """`concurrency` clients, each streaming `per_client` requests in turn (prompt i of the list for request i)."""
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as http:
        async def client(c: int) -> list[RequestResult]:
            out = []
            for k in range(per_client):
                prompt = prompts[(c * per_client + k) % len(prompts)]
                out.append(await stream_one(http, url, {**body, "prompt": prompt}))
            return out

        start = time.perf_counter()
        done = await asyncio.wait_for(asyncio.gather(*(client(c) for c in range(concurrency))), timeout_s)
        wall = time.perf_counter() - start
    return LoadResult(concurrency, wall, [r for rs in done for r in rs])
