"""The continuous-batching engine: a scheduler thread over one `SlotRunner`. Torch-free; no HTTP.

Each loop iteration, in order, `gpt.engine.scheduler.Scheduler` deciding each phase and the engine running it:
  1. admit   waiting requests take free slots (oldest first); cancelled or expired ones leave the queue
  2. reap    cancelled or expired requests free their slots
  3. prefill one slot's unfed window: all of it when nothing is decoding, otherwise one chunk of at most
             `prefill_chunk` tokens, so a long prompt never stalls the running streams for long
  4. decode  one step for every slot with exactly one unfed token, each row at its own length; sample each
             row with its own parameters and RNG; emit the text; finish on max_tokens or a stop string.
             With a drafter (`speculative=`), while at most `speculate_rows` rows decode, each of them instead
             verifies its drafts in a batch-1 run over its own view of the cache (onnxruntime's CPU
             GroupQueryAttention refuses rows that each append several tokens in one batched run): one run
             then writes 1 + the accepted drafts. Past that load the plain batched step is cheaper per character.

The window policy is `gpt.decode.loop`'s (`slide`), per row: a window that would pass block_size keeps its last
block_size // 2 tokens and re-prefills them into its own slot. So a request's tokens do not depend on what
else shares the batch: greedy text equals `gpt.sample --temperature 0`, a seeded request is the same alone or
under load, speculating or not: a speculative row spends its RNG's draws exactly as a plain one does
(`gpt.decode.speculative.loop`). An exception inside one request ends that request with an error event; the loop
goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from gpt.decode.loop import encode_prompt, slide
from gpt.decode.sampler import Uniforms, next_draws, sample_tokens
from gpt.decode.speculative.loop import (
    DEFAULT_DRAFT_TOKENS,
    Drafter,
    Pacer,
    accept_tokens,
    check_draft_tokens,
    model_tokens,
)
from gpt.engine.request import Event, GenerationParams, Request, RequestFailed, StopText, drain
from gpt.engine.runner import SlotRunner
from gpt.engine.scheduler import Admission, Batch, Chunk, Scheduler, Slot
from gpt.errors import GPTError
from gpt.tokenizer import CharTokenizer

log = logging.getLogger("gpt.engine")

DEFAULT_SLOTS = 16  # 2-core AMD EPYC, cpu shape: 16 rows give 3.4-3.75x the tok/s of 1 (README, Serving)
DEFAULT_MAX_QUEUE = 256
DEFAULT_SPECULATE_ROWS = 1  # two rows verified one by one lost to one batched step (docs/speculative.md)


class EngineClosed(GPTError):
    """The engine is shutting down and takes no new requests."""


class Engine:
    """`submit(prompt, params, sink)` from any thread; `sink(event)` is called on the engine's thread."""

    def __init__(self, path: Path | str, slots: int = DEFAULT_SLOTS, threads: int | None = None,
                 max_queue: int = DEFAULT_MAX_QUEUE, prefill_chunk: int = 0, speculative: str | None = None,
                 draft_tokens: int = DEFAULT_DRAFT_TOKENS, speculate_rows: int = DEFAULT_SPECULATE_ROWS,
                 drafter: Drafter | None = None, adaptive: bool = True, **drafter_options):
        """`speculative`: `ngram` or a draft model's .onnx file (`gpt.decode.speculative.drafters.open_drafter`, with
        `drafter_options`), or pass a `drafter`; `draft_tokens` per verify run, checked here when there is a drafter
        (a request may ask for fewer, or 0: `submit` checks that); rows verify their drafts while at most
        `speculate_rows` decode, and each while drafting pays for it (`adaptive`,
        `gpt.decode.speculative.loop.Pacer`)."""
        if max_queue < 0:
            raise GPTError(f"max_queue must be >= 0, got {max_queue}")
        if prefill_chunk < 0:
            raise GPTError(f"prefill_chunk must be >= 0 (0 = whole prompts), got {prefill_chunk}")
        if speculate_rows < 0:
            raise GPTError(f"speculate_rows must be >= 0, got {speculate_rows}")
        self.runner = SlotRunner(path, slots, threads)
        if speculative is not None or drafter is not None:
            check_draft_tokens(draft_tokens, self.runner.block_size)
        if speculative is not None:
            from gpt.decode.speculative.drafters import open_drafter

            drafter = open_drafter(speculative, self.runner, threads, **drafter_options)
        self.drafter, self.draft_tokens, self.adaptive = drafter, draft_tokens if drafter else 0, adaptive
        self.drafts = {"runs": 0, "proposed": 0, "accepted": 0}  # speculative verify runs (for /metrics)
        self.tokenizer = CharTokenizer(self.runner.vocab)
        self.block_size, self.slots, self.max_queue = self.runner.block_size, slots, max_queue
        self.scheduler = Scheduler(slots, max_queue, prefill_chunk or self.block_size, speculate_rows)
        self._cond = threading.Condition()  # guards the scheduler's queue and table between callers and the loop
        self._closing = self._stopped = False
        self.steps = 0  # decode steps run (for tests and metrics)
        self._thread = threading.Thread(target=self._loop, name="gpt-engine", daemon=True)
        self._thread.start()

    # ---- the caller's side -------------------------------------------------------------------------------

    def submit(self, prompt: str, params: GenerationParams, sink: Callable[[Event], None]) -> Request:
        """Queue a request (a `GPTError` for a bad prompt or draft_tokens, `QueueFull`, `EngineClosed`). Here, not
        in `GenerationParams`, a request's draft_tokens meets the model's block_size."""
        if params.draft_tokens is not None:
            check_draft_tokens(params.draft_tokens, self.block_size, off=True)
            if params.draft_tokens and not self.drafter:
                raise GPTError("draft_tokens needs an engine that drafts: a server started with --speculative "
                               "distilled|ngram|FILE, or Engine(..., speculative='distilled')")
        ids = encode_prompt(self.tokenizer, prompt)
        request = Request(ids[-self.block_size:], params, sink, prompt_tokens=len(ids), notify=self._notify)
        with self._cond:
            if self._closing:
                raise EngineClosed("the server is shutting down")
            self.scheduler.queue(request)
            self._cond.notify()
        return request

    def stream(self, prompt: str, params: GenerationParams) -> Iterator[str]:
        """The new text of one request as it is generated (a `GPTError` if it fails)."""
        events: queue.SimpleQueue[tuple[int, Event]] = queue.SimpleQueue()
        request = self.submit(prompt, params, lambda e: events.put((0, e)))
        try:
            for _, text in drain(events.get, 1):
                yield text
        finally:
            request.cancel()

    def generate(self, prompts: list[str], params: GenerationParams) -> list[str]:
        """Many prompts at once, decoded together; each one's new text."""
        events: queue.SimpleQueue[tuple[int, Event]] = queue.SimpleQueue()
        requests = [self.submit(p, params, lambda e, i=i: events.put((i, e))) for i, p in enumerate(prompts)]
        pieces: list[list[str]] = [[] for _ in prompts]
        try:
            for i, text in drain(events.get, len(prompts)):
                pieces[i].append(text)
        except RequestFailed as e:
            raise GPTError(f"prompt {e.index}: {e}") from None
        finally:
            for r in requests:
                r.cancel()
        return ["".join(p) for p in pieces]

    def stats(self) -> dict[str, int | bool]:
        with self._cond:
            return {"slots": self.slots, "active": self.scheduler.active, "waiting": len(self.scheduler.waiting),
                    "steps": self.steps, "closing": self._closing,
                    **{f"draft_{k}": v for k, v in self.drafts.items()}}

    @property
    def running(self) -> bool:
        """The scheduler thread is alive (it stops only after close())."""
        return self._thread.is_alive()

    def stop_accepting(self) -> None:
        """Take no new requests (`submit` raises `EngineClosed`, /health says 503); those queued or running go on."""
        with self._cond:
            self._closing = True
            self._cond.notify()

    def close(self, drain_timeout: float = 0.0) -> None:
        """Take no new requests; let those in flight finish for up to `drain_timeout` s, end the rest."""
        self.stop_accepting()
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline and self._busy():
            time.sleep(0.01)
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the engine's thread -----------------------------------------------------------------------------

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify()

    def _busy(self) -> bool:
        with self._cond:
            return self.scheduler.busy

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self.scheduler.busy and not self._stopped:
                    self._cond.wait()
                if self._stopped:  # after close()'s drain: what is left ends now
                    self._end_all(Event("error", error="the server shut down before the request finished",
                                        code="shutdown"))
                    return
                self._admit(self.scheduler.admit(time.monotonic()))
            try:
                self._step()
            except Exception:  # a bug: end what was running, keep serving
                log.exception("engine step failed")
                for i, slot in enumerate(self.scheduler.slots):
                    if slot is not None:
                        self._fail(i, "internal error in the engine step", "internal")

    def _end_all(self, event: Event) -> None:
        for r in self.scheduler.waiting:
            self._end(r, event)
        self.scheduler.waiting.clear()
        for i, slot in enumerate(self.scheduler.slots):
            if slot is not None:
                self._finish(i, event)

    def _admit(self, admission: Admission) -> None:
        for r in admission.expired:
            self._end(r, self._ending_event(r))
        for i, r in admission.admitted:
            self.scheduler.slots[i] = self._open(r)

    def _open(self, r: Request) -> Slot:
        """The row state of a request that takes a row: its seed's RNG, its drafts, its stop strings."""
        p = r.params
        sampling = p.sampling
        if p.seed is None:  # a fresh seed for each request
            sampling = replace(sampling, seed=int(np.random.SeedSequence().entropy % 2**63))
        drafts = self.draft_tokens if p.draft_tokens is None else p.draft_tokens
        return Slot(r, list(r.prompt_ids), sampling,
                    Uniforms(np.random.default_rng(sampling.seed), sampling.temperature == 0), Pacer(self.adaptive),
                    draft_tokens=drafts, history=list(r.prompt_ids), text=StopText(p.stop))

    def _ending_event(self, r: Request) -> Event:
        if r.cancelled:
            return Event("done", finish_reason="cancelled", prompt_tokens=r.prompt_tokens)
        return Event("error", error=f"the request ran past its timeout of {r.params.timeout:g} s", code="timeout")

    def _step(self) -> None:
        """End the overdue rows, prefill one chunk, run one decode round: each planned by the scheduler just before
        it runs (a prefill's last chunk samples its row's first token, and that row decodes in this round)."""
        for i in self.scheduler.overdue(time.monotonic()):
            self._finish(i, self._ending_event(self.scheduler.slots[i].request))
        chunk = self.scheduler.prefill()
        if chunk is not None:
            self._prefill(chunk)
        self._decode(self.scheduler.decode())

    def _prefill(self, chunk: Chunk) -> None:
        slot = self.scheduler.slots[chunk.row]
        try:
            logits = self.runner.prefill(chunk.row, slot.window[chunk.start:chunk.stop], chunk.start)
        except GPTError as e:
            self._fail(chunk.row, str(e), "internal")
            return
        slot.cached = chunk.stop
        if slot.unfed == 0:  # the whole window is in: its last logits give the next token
            self._sample_and_advance([chunk.row], logits[None])

    def _decode(self, batch: Batch) -> None:
        slots = self.scheduler.slots
        if batch.rows:  # first: the batched step writes a throwaway entry where a speculating row writes next
            began = time.perf_counter()
            self._decode_rows(batch.rows)
            if batch.timed:  # what a plain character costs these rows, for their pacers
                for i in batch.rows:
                    if slots[i] is not None:
                        slots[i].pacer.record(False, 1, (time.perf_counter() - began) / len(batch.rows))
        for i in batch.speculate:
            self._speculate(i)

    def _decode_rows(self, rows: list[int]) -> None:
        slots, n = self.scheduler.slots, rows[-1] + 1
        tokens = np.zeros(n, dtype=np.int64)
        lengths = np.zeros(n, dtype=np.int64)
        for i in range(n):
            slot = slots[i]
            if slot is not None:  # a row outside this step writes where its own next write will land
                lengths[i] = slot.cached
                tokens[i] = slot.window[-1] if i in rows else 0
        params = [slots[i].sampling for i in rows]
        in_graph = all(p.plain for p in params)
        try:
            if in_graph:  # the run samples too (gpt.decode.sampler_graph): rows outside this step sample nothing
                temperature, uniform = np.ones(n), np.zeros(n)
                temperature[rows] = [p.temperature for p in params]
                uniform[rows] = next_draws([slots[i].uniforms for i in rows])
                sampled = self.runner.decode_sampled(tokens, lengths, n, temperature, uniform)[rows].tolist()
            else:
                logits = self.runner.decode(tokens, lengths, n)
        except GPTError as e:
            for i in rows:
                self._fail(i, str(e), "internal")
            return
        self.steps += 1
        for i in rows:
            slots[i].cached += 1
        if not in_graph:
            self._sample_and_advance(rows, logits[rows])
            return
        for i, token in zip(rows, sampled, strict=True):
            self._advance_safely(i, token)

    def _speculate(self, i: int) -> None:
        """One verify run for row i: its unfed token and up to draft_tokens drafts, in its own cache row."""
        slot, began = self.scheduler.slots[i], time.perf_counter()
        k = min(slot.draft_tokens, self.block_size - len(slot.window),
                slot.request.params.max_tokens - slot.generated - 1)
        try:
            draft = self.drafter.propose(slot.history, k, slot.sampling, slot.uniforms.peek(k)) if k > 0 else []
            ids, draws = [slot.window[-1], *draft], slot.uniforms.peek(len(draft) + 1)
            if slot.sampling.plain:  # the run samples the model's token after each position itself
                tokens = self.runner.extend_sampled(i, ids, slot.cached, slot.sampling.temperature, draws)
            else:
                tokens = model_tokens(self.runner.extend(i, ids, slot.cached), slot.sampling, draws)
        except GPTError as e:
            self._fail(i, str(e), "internal")
            return
        n, token = accept_tokens(tokens, draft)
        slot.uniforms.take(n + 1)
        self.steps += 1
        self.drafts["runs"] += 1
        self.drafts["proposed"] += len(draft)
        self.drafts["accepted"] += n
        slot.pacer.record(bool(draft), n + 1, time.perf_counter() - began)
        slot.cached += 1  # the unfed token is in the cache now, and so is each accepted draft
        for t in draft[:n]:
            if not self._advance_safely(i, t) or self.scheduler.slots[i] is not slot:
                return
            slot.cached += 1
        self._advance_safely(i, token)  # the model's own token: unfed, as after a plain step

    def _sample_and_advance(self, rows: list[int], logits: np.ndarray) -> None:
        slots = [self.scheduler.slots[i] for i in rows]
        params = [s.sampling for s in slots]
        uniform = next_draws([s.uniforms for s in slots])
        tokens = sample_tokens(logits, np.array([p.temperature for p in params]), np.array([p.top_k for p in params]),
                               np.array([p.top_p for p in params]), uniform)
        for i, token in zip(rows, tokens.tolist(), strict=True):
            self._advance_safely(i, token)

    def _advance_safely(self, i: int, token: int) -> bool:
        try:
            self._advance(i, token)
            return True
        except Exception as e:  # this request's fault (or its sink's): end it alone
            slot = self.scheduler.slots[i]
            log.exception("request %s failed", slot.request.id if slot else "?")
            if slot is not None:
                self._fail(i, f"internal error: {type(e).__name__}", "internal")
            return False

    def _advance(self, i: int, token: int) -> None:
        slot = self.scheduler.slots[i]
        r = slot.request
        slot.generated += 1
        text, stopped = slot.text.push(self.tokenizer.itos[token])
        done = stopped or slot.generated >= r.params.max_tokens
        if done and not stopped:
            text += slot.text.flush()
        if text:
            r.sink(Event("token", text=text))
        if done:
            self._finish(i, Event("done", finish_reason="stop" if stopped else "length",
                                  prompt_tokens=r.prompt_tokens, completion_tokens=slot.generated))
            return
        slot.window.append(token)
        slot.history.append(token)
        window, restarted = slide(slot.window, self.block_size)  # gpt.decode.loop's window policy, this row alone
        if restarted:
            slot.window, slot.cached = window, 0

    def _fail(self, i: int, message: str, code: str) -> None:
        self._finish(i, Event("error", error=message, code=code))

    def _finish(self, i: int, event: Event) -> None:
        slot, self.scheduler.slots[i] = self.scheduler.slots[i], None
        self._end(slot.request, event)

    def _end(self, r: Request, event: Event) -> None:
        r.finished = True
        try:
            r.sink(event)
        except Exception:
            log.exception("request %s: its last event could not be delivered", r.id)
