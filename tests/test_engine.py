"""The continuous-batching engine (gpt.engine) against the one-request loop of `gpt.sample`: the same text for
each request whatever shares the batch, per-request parameters, stop strings, cancel, queue, timeout, faults."""

from __future__ import annotations

import queue
from dataclasses import replace

import numpy as np
import pytest
from conftest import run_module, wait_until

import gpt
from gpt.decode.backends.ort_decoder import open_onnx
from gpt.decode.loop import generate, prepare_prompt
from gpt.decode.sampler import Sampler, SamplingParams
from gpt.engine import Engine, Event, GenerationParams, QueueFull, RequestFailed, Tally, drain
from gpt.engine.request import StopText
from gpt.errors import GPTError
from gpt.tokenizer import CharTokenizer

# block_size is 32: lengths from 1 to 40 characters (kept tail), 100 new tokens slide every window 3-4 times
PROMPTS = ["ROMEO:", "t", "the quick brown fox jumps", "", "over the lazy dog; ROMEO: wherefore art thou?\nthe"]
# The fixture model is near-certain on its periodic text: at temperature 0.9 and top-p 0.9 every seed gave the
# same 90 characters. These settings sample (0 of 1,770 pairs of seeds gave equal texts), through top-k and top-p.
SAMPLED = {"temperature": 1.5, "top_k": 12, "top_p": 0.98}


@pytest.fixture(scope="module")
def reference(exported):
    """What `gpt.sample --backend onnxruntime` computes, one request at a time."""
    decoder = open_onnx(exported[0], threads=1)
    tokenizer = CharTokenizer(decoder.vocab)

    def text(prompt: str, n: int, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0):
        ids = prepare_prompt(tokenizer, prompt, decoder.block_size)
        out = generate(decoder, ids, n, Sampler(SamplingParams(temperature, top_k, top_p, seed)))
        return tokenizer.decode(out[0].tolist())

    return text


@pytest.fixture(scope="module")
def engine(exported):
    with Engine(exported[0], slots=3, threads=1) as e:
        yield e


def test_each_greedy_text_equals_gpt_sample_whatever_shares_the_batch(engine, reference):
    """5 prompts of different lengths on 3 slots (2 wait, then take freed slots), mixed with sampled ones."""
    greedy = GenerationParams(max_tokens=100, temperature=0)
    noise = GenerationParams(max_tokens=60, temperature=1.2, seed=5)
    events: queue.SimpleQueue = queue.SimpleQueue()
    for p in PROMPTS[:2]:
        engine.submit(p, noise, events.put)
    texts = engine.generate(PROMPTS, greedy)
    for prompt, text in zip(PROMPTS, texts, strict=True):
        assert text == reference(prompt, 100), prompt
    assert engine.stats()["active"] == 0


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {**SAMPLED, "seed": 42}], ids=["greedy", "seeded"])
def test_the_cli_prints_the_engines_text(engine, exported, sampling):
    options = [f"--{k.replace('_', '-')}={v}" for k, v in sampling.items()]
    r = run_module("gpt.sample", "--backend", "onnxruntime", "--onnx", str(exported[0]), "--prompt", "ROMEO:",
                   "--max-new-tokens", "80", *options, "--threads", "1")
    assert r.returncode == 0, r.stderr
    text = engine.generate(["ROMEO:"], GenerationParams(max_tokens=80, **sampling))[0]
    assert r.stdout == "ROMEO:" + text + "\n"


@pytest.mark.parametrize("chunk", [1, 5])
def test_chunked_prefill_gives_the_same_text(exported, reference, chunk):
    with Engine(exported[0], slots=2, threads=1, prefill_chunk=chunk) as e:
        texts = e.generate(PROMPTS, GenerationParams(max_tokens=70, temperature=0))
    assert texts == [reference(p, 70) for p in PROMPTS]


def test_a_seeded_sampled_request_is_the_same_alone_and_under_load(engine, reference):
    """Two seeds first give two texts (so the fixture really samples here), then one seed always gives its text:
    gpt.sample's, alone and beside other sampled requests."""
    params = GenerationParams(max_tokens=90, seed=42, **SAMPLED)
    alone = engine.generate(["ROMEO:"], params)[0]
    assert alone != engine.generate(["ROMEO:"], replace(params, seed=43))[0]
    assert alone == reference("ROMEO:", 90, seed=42, **SAMPLED)
    load = [engine.submit(p, GenerationParams(max_tokens=1_000_000, temperature=t, top_p=q, seed=s), lambda e: None)
            for p, t, q, s in ((PROMPTS[2], 1.5, 1.0, 1), (PROMPTS[4], 0.5, 0.5, 2))]
    assert wait_until(lambda: engine.stats()["active"] == 2)
    assert engine.generate(["ROMEO:"], params)[0] == alone
    assert not any(r.finished for r in load)  # they shared every step of it
    for r in load:
        r.cancel()
    assert wait_until(lambda: engine.stats()["active"] == 0)


def test_stop_strings_cut_the_text_before_them(engine, reference):
    full = reference("ROMEO:", 60)
    stop = full[20:23]
    text = "".join(engine.stream("ROMEO:", GenerationParams(max_tokens=60, temperature=0, stop=("zzz", stop))))
    assert text == full[:full.index(stop)]


def test_held_back_text_is_released_when_it_cannot_start_a_stop_string():
    s = StopText(("ab", "abc"))
    assert [s.push(c) for c in "xa"] == [("x", False), ("", False)]
    assert s.push("x") == ("ax", False)
    assert [s.push(c) for c in "ab"] == [("", False), ("", True)]
    assert StopText(("\n",)).push("\n") == ("", True)


def test_per_request_parameters_are_checked():
    """Each message names the field as Python and the request spell it, not a command-line flag."""
    for bad, message in [({"max_tokens": 0}, "^max_tokens must be in"), ({"temperature": -1}, "^temperature must be"),
                         ({"top_p": 0}, "^top_p must be"), ({"top_k": -1}, "^top_k must be"),
                         ({"stop": ("",)}, "stop must be"), ({"stop": ("a", "b", "c", "d", "e")}, "at most 4"),
                         ({"timeout": 0}, "timeout")]:
        with pytest.raises(GPTError, match=message):
            GenerationParams(**bad)


def test_a_requests_draft_tokens_is_checked_against_the_models_block_size(engine):
    """GenerationParams cannot know block_size (32 here): `submit` checks draft_tokens, 0 .. 16 (0 = off), and
    asks for a drafter when it is not 0."""
    for bad in (-1, 17):
        with pytest.raises(GPTError, match=rf"draft_tokens must be in \[0, 16\].*got {bad}"):
            engine.submit("ROMEO:", GenerationParams(draft_tokens=bad), lambda e: None)
    with pytest.raises(GPTError, match="--speculative"):
        engine.submit("ROMEO:", GenerationParams(draft_tokens=4), lambda e: None)
    assert engine.generate(["ROMEO:"], GenerationParams(max_tokens=5, temperature=0, draft_tokens=0))


def test_drain_reads_a_groups_events_until_each_is_done_or_one_fails():
    events = iter([(1, Event("token", text="a")), (0, Event("token", text="b")), (1, Event("done", "", "length")),
                   (0, Event("token", text="c")), (0, Event("done", "", "stop"))])
    assert list(drain(lambda: next(events), 2)) == [(1, "a"), (0, "b"), (0, "c")]
    failing = iter([(0, Event("token", text="a")), (1, Event("error", error="boom", code="internal"))])
    with pytest.raises(RequestFailed, match="boom") as info:
        list(drain(lambda: next(failing), 2))
    assert info.value.index == 1
    tally = Tally(1)
    assert tally.take(0, Event("done", finish_reason="length", completion_tokens=3)) is None
    assert tally.over and tally.finish_reasons == ["length"] and tally.completion_tokens == 3




def test_cancel_frees_the_slot_within_one_step(engine):
    got: queue.SimpleQueue[Event] = queue.SimpleQueue()
    r = engine.submit("ROMEO:", GenerationParams(max_tokens=1_000_000, temperature=0), got.put)
    assert got.get(timeout=10).kind == "token"
    steps = engine.stats()["steps"]
    r.cancel()
    assert wait_until(lambda: engine.stats()["active"] == 0)
    assert engine.stats()["steps"] - steps <= 2  # the step in flight, at most one more
    while (event := got.get(timeout=10)).kind == "token":
        pass
    assert event.finish_reason == "cancelled"


def test_the_queue_is_bounded(exported):
    with Engine(exported[0], slots=1, threads=1, max_queue=2) as e:
        long = GenerationParams(max_tokens=1_000_000, temperature=0)
        held = [e.submit("ROMEO:", long, lambda ev: None) for _ in range(3)]  # 1 slot + 2 waiting
        with pytest.raises(QueueFull, match="max_queue 2"):
            e.submit("ROMEO:", long, lambda ev: None)
        for r in held:
            r.cancel()
        assert wait_until(lambda: e.stats()["active"] == 0 and e.stats()["waiting"] == 0)
        assert e.generate(["t"], GenerationParams(max_tokens=3, temperature=0))  # it serves again


def test_a_request_past_its_timeout_ends_with_an_error_and_others_go_on(engine, reference):
    got: queue.SimpleQueue[Event] = queue.SimpleQueue()
    engine.submit("ROMEO:", GenerationParams(max_tokens=1_000_000, temperature=0, timeout=0.2), got.put)
    other = engine.generate(["the"], GenerationParams(max_tokens=50, temperature=0))[0]
    while (event := got.get(timeout=10)).kind == "token":
        pass
    assert event.kind == "error" and event.code == "timeout" and "0.2 s" in event.error
    assert other == reference("the", 50)


def test_a_failing_request_ends_alone_and_the_loop_goes_on(engine, reference):
    """A sink that raises (a consumer's bug) ends its own request with an error; the batch it shared goes on."""
    calls = []

    def broken(event: Event) -> None:
        calls.append(event)
        if len(calls) == 3:
            raise RuntimeError("consumer bug")

    engine.submit("ROMEO:", GenerationParams(max_tokens=200, temperature=0), broken)
    texts = engine.generate(PROMPTS[:3], GenerationParams(max_tokens=60, temperature=0))
    assert texts == [reference(p, 60) for p in PROMPTS[:3]]
    assert wait_until(lambda: calls and calls[-1].kind == "error")
    assert calls[-1].code == "internal" and len(calls) == 4


def test_close_drains_then_refuses(exported):
    e = Engine(exported[0], slots=2, threads=1)
    got: queue.SimpleQueue[Event] = queue.SimpleQueue()
    e.submit("ROMEO:", GenerationParams(max_tokens=40, temperature=0), got.put)
    e.close(drain_timeout=10)
    events = []
    while not got.empty():
        events.append(got.get())
    assert events[-1].kind == "done" and events[-1].finish_reason == "length"
    with pytest.raises(GPTError, match="shutting down"):
        e.submit("ROMEO:", GenerationParams(), lambda ev: None)


def test_the_python_api_reaches_the_engine(exported, reference):
    model = gpt.load(exported[0], threads=1)
    with model.engine(slots=2) as e:
        texts = e.generate(["ROMEO:", "the"], GenerationParams(max_tokens=40, temperature=0))
        pieces = list(e.stream("t", GenerationParams(max_tokens=10, temperature=0)))
    assert texts == [reference("ROMEO:", 40), reference("the", 40)]
    assert "".join(pieces) == reference("t", 10) and len(pieces) == 10


def test_rows_at_different_lengths_step_together(engine):
    """The decode steps really were shared: fewer steps than tokens."""
    before = engine.stats()["steps"]
    engine.generate(PROMPTS, GenerationParams(max_tokens=50, temperature=0))
    steps = engine.stats()["steps"] - before
    assert steps < 0.5 * 50 * len(PROMPTS)
    assert np.isfinite(steps)
