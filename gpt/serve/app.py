"""The HTTP layer over one `Engine`: OpenAI's completions API, thin (routes, SSE, auth, limits, metrics).

    POST /v1/completions   prompt string or list, n, max_tokens, temperature, top_p, top_k, stop, seed,
                           stream (server-sent events in OpenAI's chunk format, ending in `data: [DONE]`)
    GET  /v1/models        the one model
    GET  /health           200 {"status": "ok", ...} while serving, 503 while shutting down
    GET  /metrics          Prometheus text format

Under Ray Serve (gpt.serve.ray_app) the same app runs in every replica; a `Fleet` adds the other replicas to
/health and /metrics.

Every bad request is a 4xx with OpenAI's error object; nothing a request does reaches another request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse

from gpt.engine import Engine, EngineClosed, Event, QueueFull, Tally
from gpt.errors import GPTError
from gpt.serve.metrics import Metrics
from gpt.serve.options import Settings
from gpt.serve.protocol import (
    DONE,
    APIError,
    Choice,
    Completion,
    CompletionRequest,
    Usage,
    completion_id,
    parse_request,
)

log = logging.getLogger("gpt.serve")

STATUS_OF_ERROR = {"timeout": 504, "shutdown": 503, "internal": 500}
OUTCOME_OF_STATUS = {400: "invalid", 401: "unauthorized", 404: "unknown_model", 429: "queue_full", 503: "shutting_down"}
DEFAULTS = Settings()


class _Mailbox:
    """Events from the engine's thread to the event loop with at most one wake-up pending: a decode step of 16
    rows hands over 16 events for one `call_soon_threadsafe`, not 16 (each one a write to the loop's pipe)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.items, self.pending = loop, deque(), False

    def put(self, queue: asyncio.Queue, item: tuple[int, Event]) -> None:  # on the engine's thread
        self.items.append((queue, item))
        if not self.pending:
            self.pending = True
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:  # on the event loop: clear first, so a put from now on schedules again
        self.pending = False
        while self.items:
            queue, item = self.items.popleft()
            queue.put_nowait(item)


class _Choices:
    """The engine requests behind one HTTP request: their events, merged, on the event loop's queue."""

    def __init__(self, engine: Engine, body: CompletionRequest, settings: Settings, mailbox: _Mailbox):
        self.mailbox = mailbox
        self.events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        params = body.generation_params(settings.max_tokens_limit, settings.request_timeout)
        self.n = n = body.n or 1
        self.prompts = body.prompts()
        self.requests = []
        try:
            for p, prompt in enumerate(self.prompts):
                for j in range(n):
                    seeded = params if params.seed is None else replace(params, seed=params.seed + j)
                    index = p * n + j
                    self.requests.append(engine.submit(prompt, seeded, lambda e, i=index: self._put(i, e)))
        except QueueFull as e:
            self.cancel()
            raise APIError(429, f"the server is busy: {e}; retry after {settings.retry_after_s} s", None,
                           "queue_full", "rate_limit_error", {"Retry-After": str(settings.retry_after_s)}) from None
        except EngineClosed as e:
            self.cancel()
            raise APIError(503, str(e), None, "shutting_down", "server_error") from None
        except GPTError as e:
            self.cancel()
            raise APIError(400, str(e), "draft_tokens" if "draft_tokens" in str(e) else "prompt") from None
        self.prompt_tokens = sum(r.prompt_tokens for r in self.requests)

    def _put(self, index: int, event: Event) -> None:
        self.mailbox.put(self.events, (index, event))

    def prompt_of(self, index: int) -> str:
        return self.prompts[index // self.n]

    def usage(self, completion_tokens: int) -> Usage:
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=completion_tokens,
                     total_tokens=self.prompt_tokens + completion_tokens)

    def cancel(self) -> None:
        for r in self.requests:
            r.cancel()


def engine_error(event: Event) -> APIError:
    """An engine's error event as OpenAI's error object (timeout 504, shutdown 503, anything else 500)."""
    return APIError(STATUS_OF_ERROR.get(event.code, 500), event.error, None, event.code, "server_error")


class Fleet(Protocol):
    """The other engines behind the same endpoint (gpt.serve.ray_app's replicas); a single process has none."""

    async def health(self) -> dict: ...  # merged into /health

    async def metrics(self) -> bytes: ...  # served as /metrics instead of this engine's own


def create_app(engine: Engine, settings: Settings = DEFAULTS, fleet: Fleet | None = None) -> FastAPI:
    app = FastAPI(title="shakespeare-gpt", summary="OpenAI-compatible completions over a continuous-batching engine")
    app.state.metrics = metrics = Metrics(engine)
    app.state.mailbox = None  # made on the first request, on the loop that serves it

    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError) -> JSONResponse:
        metrics.requests.labels(outcome=OUTCOME_OF_STATUS.get(e.status, str(e.status))).inc()
        log.info("%s %s -> %d %s", request.method, request.url.path, e.status, e.message)
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    def authorize(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        if header != f"Bearer {settings.api_key}":
            raise APIError(401, "missing or wrong API key: send `Authorization: Bearer <key>`", None,
                           "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise APIError(400, f"the body has {int(declared):,} bytes; the limit is {limit:,}", None, "body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(400, f"the body is over the limit of {limit:,} bytes", None, "body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/health")
    async def health() -> JSONResponse:
        stats = engine.stats()
        status = 503 if stats["closing"] else 200
        others = {} if fleet is None else await fleet.health()
        return JSONResponse({"status": "shutting down" if status == 503 else "ok", "model": settings.model_name,
                             **stats, **others}, status_code=status)

    @app.get("/metrics")
    async def prometheus() -> Response:
        text = generate_latest(metrics.registry) if fleet is None else await fleet.metrics()
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        authorize(request)
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "shakespeare-gpt"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        arrived = time.monotonic()
        authorize(request)
        body = parse_request(await read_body(request))
        if body.model != settings.model_name:
            raise APIError(404, f"the model {body.model!r} does not exist; this server has {settings.model_name!r}",
                           "model", "model_not_found")
        if app.state.mailbox is None:
            app.state.mailbox = _Mailbox(asyncio.get_running_loop())
        choices = _Choices(engine, body, settings, app.state.mailbox)
        metrics.prompt_tokens.inc(choices.prompt_tokens)
        cid = completion_id()
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return EventSourceResponse(_stream(choices, body, cid, arrived, usage, metrics, settings), sep="\n",
                                       ping=15)
        return await _complete(request, choices, body, cid, arrived, metrics, settings)

    return app


async def _next_event(request: Request, events: asyncio.Queue[tuple[int, Event]]) -> tuple[int, Event] | None:
    """The next (index, event); None once the client has gone away (looked at every 0.5 s while none comes)."""
    while True:
        try:
            return await asyncio.wait_for(events.get(), timeout=0.5)
        except TimeoutError:
            if await request.is_disconnected():
                return None


async def _complete(request: Request, choices: _Choices, body: CompletionRequest, cid: str, arrived: float,
                    metrics: Metrics, settings: Settings) -> JSONResponse:
    n = len(choices.requests)
    pieces = [[choices.prompt_of(i)] if body.echo else [] for i in range(n)]
    tally, first = Tally(n), True
    try:
        while not tally.over:
            got = await _next_event(request, choices.events)
            if got is None:
                metrics.requests.labels(outcome="disconnected").inc()
                return JSONResponse({}, status_code=499)
            index, event = got
            text = tally.take(index, event)
            if text is not None:
                if first:
                    metrics.ttft.observe(time.monotonic() - arrived)
                    first = False
                pieces[index].append(text)
    finally:
        choices.cancel()  # a no-op for finished requests; frees the slots of the rest
    if tally.failed is not None:
        _, event = tally.failed
        metrics.requests.labels(outcome=event.code or "error").inc()
        error = engine_error(event)
        return JSONResponse(error.body(), status_code=error.status)
    metrics.completion_tokens.inc(tally.completion_tokens)
    metrics.requests.labels(outcome="ok").inc()
    response = Completion(id=cid, model=settings.model_name,
                          choices=[Choice(text="".join(p), index=i, finish_reason=f) for i, (p, f) in
                                   enumerate(zip(pieces, tally.finish_reasons, strict=True))],
                          usage=choices.usage(tally.completion_tokens))
    return JSONResponse(response.model_dump())


class _Chunks:
    """One stream's chunks in OpenAI's format, and when each choice last got text (the latency metrics, and
    `stream_interval`'s pace)."""

    def __init__(self, cid: str, model_name: str, n: int, arrived: float, metrics: Metrics):
        self.head = {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model_name,
                     "system_fingerprint": None}
        self.arrived, self.metrics = arrived, metrics
        self.last = [0.0] * n  # when each choice's text last went out (0: not yet)
        self.sent = 0.0  # when the last batch's texts went out

    def chunk(self, index: int, text: str, finish_reason: str | None = None) -> str:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}
        return json.dumps({**self.head, "choices": [choice], "usage": None}, ensure_ascii=False)

    def of_batch(self, batch: list[tuple[int, Event]], tally: Tally) -> Iterator[str]:
        """The chunks of a batch of events: one per choice for its texts (a choice that ends sends the texts it has
        first, then its finish_reason), or, at an error, that error and nothing after it."""
        now = time.monotonic()
        texts: dict[int, str] = {}
        for index, event in batch:
            text = tally.take(index, event)
            if text is not None:
                texts[index] = texts.get(index, "") + text
                continue
            if index in texts:
                yield self.chunk(index, texts.pop(index))
            if tally.failed is not None:
                yield json.dumps(engine_error(event).body())
                return
            yield self.chunk(index, "", event.finish_reason)
        if texts:
            self.sent = now
        for index, text in texts.items():
            if self.last[index]:
                self.metrics.itl.observe(now - self.last[index])
            elif not any(self.last):
                self.metrics.ttft.observe(now - self.arrived)
            self.last[index] = now
            yield self.chunk(index, text)


async def _gather(events: asyncio.Queue[tuple[int, Event]], interval: float | None,
                  sent: float) -> list[tuple[int, Event]]:
    """The next event and every one waiting behind it; with `interval`, after a chunk went out at `sent`, the
    events of that long since then (the first text goes out at once, the rest at most so often)."""
    batch = [await events.get()]
    if interval and sent:
        await asyncio.sleep(sent + interval - time.monotonic())
    while not events.empty():
        batch.append(events.get_nowait())
    return batch


async def _stream(choices: _Choices, body: CompletionRequest, cid: str, arrived: float, include_usage: bool,
                  metrics: Metrics, settings: Settings) -> AsyncIterator[str]:
    """OpenAI's chunks, then `[DONE]`. The texts that wait in the queue when the loop comes round are sent as one
    chunk per choice: under load one event (one JSON, one write) carries several characters, not one each. With
    `stream_interval` the stream waits that long after a chunk before it gathers the next one: fewer, longer
    chunks, for a hop that costs per chunk (Ray Serve's proxy)."""
    n = len(choices.requests)
    chunks, tally, outcome = _Chunks(cid, settings.model_name, n, arrived, metrics), Tally(n), "disconnected"
    try:
        if body.echo:
            for i in range(n):
                yield chunks.chunk(i, choices.prompt_of(i))
        while not tally.over:
            for line in chunks.of_batch(await _gather(choices.events, settings.stream_interval, chunks.sent), tally):
                yield line
        if tally.failed is None:
            outcome = "ok"
            if include_usage:
                yield Completion(id=cid, model=settings.model_name, choices=[],
                                 usage=choices.usage(tally.completion_tokens)).model_dump_json()
        yield DONE
    finally:  # also when the client went away: the engine frees the slots at its next step
        choices.cancel()
        metrics.completion_tokens.inc(tally.completion_tokens)
        if tally.failed is not None:
            outcome = tally.failed[1].code or "error"
        metrics.requests.labels(outcome=outcome).inc()
