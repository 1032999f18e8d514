"""gpt.engine.scheduler's decisions on their own, no model: admission, chunked prefill, the decode round's split
between the batched step and speculation."""

from __future__ import annotations

import numpy as np
import pytest

from gpt.decode.sampler import Uniforms
from gpt.decode.speculative.loop import Pacer
from gpt.engine.request import GenerationParams, Request
from gpt.engine.scheduler import Batch, Chunk, QueueFull, Scheduler, Slot


def request(submitted: float = 0.0, **params) -> Request:
    return Request([1, 2, 3], GenerationParams(**params), lambda e: None, prompt_tokens=3, submitted=submitted)


def slot(window: int, cached: int, submitted: float = 0.0, draft_tokens: int = 0) -> Slot:
    r = request(submitted)
    return Slot(r, list(range(window)), r.params.sampling, Uniforms(np.random.default_rng(0), True), Pacer(False),
                draft_tokens=draft_tokens, cached=cached)


def test_admission_fills_free_rows_oldest_first_and_drops_the_requests_that_are_over():
    s = Scheduler(slots=3, max_queue=2, prefill_chunk=8, speculate_rows=1)
    s.slots[1] = slot(4, 3)
    gone, a, b, c = request(), request(1.0), request(2.0), request(3.0)
    gone.cancelled = True
    for r in (gone, a, b, c):
        s.queue(r)
    with pytest.raises(QueueFull, match="max_queue 2"):
        s.queue(request())
    admission = s.admit(now=10.0)
    assert admission.expired == [gone] and admission.admitted == [(0, a), (2, b)] and list(s.waiting) == [c]


def test_prefill_takes_the_oldest_window_whole_unless_rows_decode():
    s = Scheduler(slots=3, max_queue=0, prefill_chunk=8, speculate_rows=0)
    s.slots[0], s.slots[2] = slot(20, 0, submitted=2.0), slot(30, 10, submitted=1.0)
    assert s.prefill() == Chunk(2, 10, 30)
    s.slots[1] = slot(5, 4)  # a row decodes: one chunk of at most prefill_chunk
    assert s.prefill() == Chunk(2, 10, 18)
    assert s.decode() == Batch([1], [], False)


def test_few_rows_speculate_and_more_step_together():
    s = Scheduler(slots=3, max_queue=0, prefill_chunk=8, speculate_rows=2)
    s.slots[0], s.slots[1] = slot(5, 4, draft_tokens=4), slot(5, 4)
    assert s.decode() == Batch([1], [0], True)  # the row without drafts steps, timed for the pacers
    s.slots[2] = slot(5, 4, draft_tokens=4)
    assert s.decode() == Batch([0, 1, 2], [], False)
    assert s.prefill() is None
