"""The same clients' work without HTTP, in this process: through our `gpt.engine.Engine` (`run_ours`) and
through onnxruntime-genai's own continuous-batching `Engine` (`run_genai`; 0.18: `og.Engine`,
`create_request`, `begin_turn`, `run`) on the same gqa file: C requests kept in flight, each a prompt of the
same length (its static batches pad unequal prompts with pad_token_id, which our genai_config.json makes no
character's id), `max_tokens` new tokens each (min = max: a character model has no end token), sampled at the
same temperature. TTFT from a request's begin_turn to its first token event. Its dynamic batching needs a
paged KV cache our file does not have; `engine.static_batching.max_batch_size` raises its configured batch."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.harness.genai import open_genai
from bench.harness.load import LoadResult, RequestResult
from gpt.engine import Engine, Event, GenerationParams


def run_ours(onnx: Path, prompts: list[str], concurrency: int, total: int, max_tokens: int, temperature: float,
             threads: int, slots: int, timeout_s: float = 600) -> LoadResult:
    """`concurrency` requests kept in flight on our engine, `total` in all; times as `run_genai` takes them."""
    params = GenerationParams(max_tokens=max_tokens, temperature=temperature, seed=0)
    with Engine(onnx, slots=slots, threads=threads, max_queue=total) as engine:
        return keep_in_flight(engine, prompts, lambda i: params, concurrency, total, timeout_s)


def keep_in_flight(engine: Engine, prompts: list[str], params: Callable[[int], GenerationParams], concurrency: int,
                   total: int, timeout_s: float = 600) -> LoadResult:
    """Request i (prompt i mod len(prompts), `params(i)`) goes in as soon as one of the `concurrency` in flight
    ends, `total` in all: each request's chunks timed as they reach its sink."""
    events: queue.SimpleQueue[tuple[int, Event, float]] = queue.SimpleQueue()
    results: list[RequestResult] = []
    live: dict[int, RequestResult] = {}

    def submit(i: int) -> None:
        live[i] = RequestResult(ok=False, sent=time.perf_counter())
        engine.submit(prompts[i % len(prompts)], params(i), lambda e, i=i: events.put((i, e, time.perf_counter())))

    start = time.perf_counter()
    sent = min(concurrency, total)
    for i in range(sent):
        submit(i)
    while live and time.perf_counter() - start < timeout_s:
        i, event, now = events.get(timeout=timeout_s)
        result = live[i]
        if event.kind == "token":
            result.arrived(now, len(event.text))
            continue
        result.ok, result.error = event.kind == "done", event.error or ""
        results.append(live.pop(i))
        if sent < total:
            submit(sent)
            sent += 1
    return LoadResult(concurrency, time.perf_counter() - start, results + list(live.values()))


def run_genai(onnx: Path, prompts: list[list[int]], concurrency: int, total: int, max_tokens: int,
              temperature: float, threads: int, timeout_s: float = 600) -> tuple[LoadResult, float]:
    """(the load result, the mean rows per engine step genai actually ran)."""
    og, model = open_genai(Path(onnx), threads, engine={"static_batching": {"max_batch_size": concurrency}})
    engine = og.Engine(model)
    events = engine.create_event_buffer(4 * concurrency + 16)
    live: dict[int, tuple[object, RequestResult]] = {}  # id(request) -> (the request, its result so far)
    results: list[RequestResult] = []
    next_prompt, rows = 0, []

    def submit() -> None:
        nonlocal next_prompt
        request = engine.create_request()
        options = og.TurnOptions(request)
        options.set_max_generated_tokens(max_tokens)
        options.set_min_generated_tokens(max_tokens)
        options.set_do_sample(temperature > 0)
        if temperature > 0:
            options.set_temperature(temperature)
            options.set_top_k(0)
        request.begin_turn(np.asarray(prompts[next_prompt % len(prompts)], dtype=np.int32), options)
        live[id(request)] = (request, RequestResult(ok=False, sent=time.perf_counter()))
        next_prompt += 1

    start = time.perf_counter()
    for _ in range(min(concurrency, total)):
        submit()
    while live and time.perf_counter() - start < timeout_s:
        out = engine.run(events)
        now, n = time.perf_counter(), 0
        for event in out:
            n += 1
            key = next((k for k, v in live.items() if v[0] is event.request), None)
            if key is None:
                continue
            result = live[key][1]
            if event.token is not None and event.finish_reason != og.FinishReason.FAILED:
                result.arrived(now, 1)
            if event.finish_reason not in (None, og.FinishReason.NONE):
                result.ok = event.finish_reason == og.FinishReason.MAX_GENERATED_TOKENS
                result.error = "" if result.ok else str(event.finish_reason)
                results.append(result)
                del live[key]
                if next_prompt < total:
                    submit()
        rows.append(n)
    wall = time.perf_counter() - start
    results += [v[1] for v in live.values()]
    return LoadResult(concurrency, wall, results), float(np.mean(rows)) if rows else 0.0
