"""The engine's decisions, apart from their execution (as vLLM's scheduler hands its engine a plan): which waiting
requests take which free rows, which rows end, which row prefills which chunk, which rows decode in the batched
step and which verify drafts. Torch-free; it runs nothing, `gpt.engine.core.Engine` runs what it plans.

The scheduler owns the slot table (one `Slot` or None per row of the runner's cache) and the waiting queue; the
engine fills a row it was given and frees a row whose request ended. Each phase of an engine iteration is planned
just before it runs, on the state the phase before left: the prefill whose last chunk goes in samples that row's
first token, and the row decodes in the same iteration's decode round.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gpt.decode.sampler import SamplingParams, Uniforms
from gpt.decode.speculative.loop import Pacer
from gpt.engine.request import Request, StopText
from gpt.errors import GPTError


class QueueFull(GPTError):
    """More requests are waiting than the engine's max_queue."""


@dataclass
class Slot:
    """One row of the cache and the request that holds it."""

    request: Request
    window: list[int]  # the ids of the current window: its first `cached` are in this slot's cache rows
    sampling: SamplingParams
    uniforms: Uniforms  # the request's draws, one per token
    pacer: Pacer  # whether drafting pays for this request (gpt.decode.speculative.loop.Pacer)
    draft_tokens: int = 0
    cached: int = 0
    generated: int = 0
    history: list[int] = field(default_factory=list)  # prompt + generated, unwindowed (the drafter's context)
    text: StopText = field(default_factory=lambda: StopText(()))

    @property
    def unfed(self) -> int:
        return len(self.window) - self.cached


@dataclass(frozen=True)
class Admission:
    """Requests that left the queue: `expired` (cancelled or past their deadline while waiting: they end there) and
    `admitted`, each with the free row it takes (oldest first)."""

    expired: list[Request]
    admitted: list[tuple[int, Request]]


@dataclass(frozen=True)
class Chunk:
    """Prefill positions start .. stop - 1 of row `row`'s window into its cache row."""

    row: int
    start: int
    stop: int


@dataclass(frozen=True)
class Batch:
    """One decode round: `rows` step together in one batched run, then each row of `speculate` verifies its drafts
    in a run of its own. `timed`: few rows decode (at most speculate_rows), so what a plain character costs the
    `rows` is recorded for their pacers, which weigh drafting against it."""

    rows: list[int]
    speculate: list[int]
    timed: bool


class Scheduler:
    """Continuous batching's policy over `slots` rows:
      admit    waiting requests take free rows, oldest first; cancelled or expired ones leave the queue
      overdue  cancelled or expired requests free their rows
      prefill  one row's unfed window, the oldest request's: all of it when nothing is decoding, otherwise one
               chunk of at most `prefill_chunk` tokens, so a long prompt never stalls the running streams for long
      decode   every row with exactly one unfed token, in one batched step; while at most `speculate_rows` rows
               decode, each of them whose request drafts (and whose pacer says it pays) verifies drafts instead
    """

    def __init__(self, slots: int, max_queue: int, prefill_chunk: int, speculate_rows: int):
        self.slots: list[Slot | None] = [None] * slots
        self.waiting: deque[Request] = deque()
        self.max_queue, self.prefill_chunk, self.speculate_rows = max_queue, prefill_chunk, speculate_rows

    @property
    def active(self) -> int:
        return sum(s is not None for s in self.slots)

    @property
    def busy(self) -> bool:
        return bool(self.waiting) or self.active > 0

    def queue(self, request: Request) -> None:
        """Let `request` wait for a row (`QueueFull` past max_queue beyond the free rows)."""
        if len(self.waiting) >= self.max_queue + self.slots.count(None):
            raise QueueFull(f"{len(self.waiting)} requests are already waiting (max_queue {self.max_queue})")
        self.waiting.append(request)

    def admit(self, now: float) -> Admission:
        """Take out of the queue the requests that are over, then as many of the rest as there are free rows."""
        expired = [r for r in self.waiting if r.over(now)]
        for r in expired:
            self.waiting.remove(r)
        free = [i for i, s in enumerate(self.slots) if s is None]
        admitted = [(i, self.waiting.popleft()) for i in free[:len(self.waiting)]]
        return Admission(expired, admitted)

    def overdue(self, now: float) -> list[int]:
        """The rows whose request was cancelled or ran past its deadline."""
        return [i for i, s in enumerate(self.slots) if s is not None and s.request.over(now)]

    def prefill(self) -> Chunk | None:
        pending = [i for i, s in enumerate(self.slots) if s is not None and s.unfed > 1]
        if not pending:
            return None
        i = min(pending, key=lambda i: self.slots[i].request.submitted)
        slot = self.slots[i]
        decoding = any(s is not None and s.unfed == 1 for s in self.slots)
        n = min(slot.unfed, self.prefill_chunk) if decoding else slot.unfed
        return Chunk(i, slot.cached, slot.cached + n)

    def decode(self) -> Batch:
        """The rows ready to decode; asks the pacers of the rows that could speculate (each counts its rounds)."""
        ready = [i for i, s in enumerate(self.slots) if s is not None and s.unfed == 1]
        few = len(ready) <= self.speculate_rows
        speculate = [i for i in ready if few and self.slots[i].draft_tokens and self.slots[i].pacer.drafts(1)]
        return Batch([i for i in ready if i not in speculate], speculate, few)
