"""`python -m gpt.serve`: OpenAI's completions API over the engine, driven by the official `openai` client and by
httpx, on 127.0.0.1 only. Every server a test starts is stopped by it; every client loop is bounded."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import ROOT, wait_until
from servers import HOST, free_port, server_process, sse, stream_through_sigterm, wait_healthy

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from gpt.engine import Engine, GenerationParams  # noqa: E402
from gpt.serve.app import Settings, create_app  # noqa: E402

KEY = "test-key"


@contextlib.contextmanager
def server_thread(engine: Engine, settings: Settings | None = None) -> Iterator[str]:
    """The same app in this process (uvicorn in a thread), for tests that reach inside the engine."""
    port = free_port()
    app = create_app(engine, settings or Settings())
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{HOST}:{port}"
    try:
        wait_healthy(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def served(exported) -> Iterator[str]:
    with server_process(exported[0], "--slots", "4", "--api-key", KEY, "--max-tokens-limit", "100000") as (url, _):
        yield url


@pytest.fixture(scope="module")
def reference(exported):
    with Engine(exported[0], slots=1, threads=1) as e:
        def text(prompt: str, n: int, **sampling) -> str:  # greedy unless told otherwise
            return e.generate([prompt], GenerationParams(max_tokens=n, **{"temperature": 0, **sampling}))[0]

        yield text


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def test_the_openai_client_completes_and_streams_the_engines_text(served, reference):
    c = client(served)
    assert [m.id for m in c.models.list()] == ["model"]
    done = c.completions.create(model="model", prompt="ROMEO:", max_tokens=80, temperature=0)
    assert done.choices[0].text == reference("ROMEO:", 80) and done.choices[0].finish_reason == "length"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (6, 80, 86)
    chunks = list(c.completions.create(model="model", prompt="ROMEO:", max_tokens=80, temperature=0, stream=True))
    assert "".join(ch.choices[0].text for ch in chunks) == reference("ROMEO:", 80)
    assert chunks[-1].choices[0].finish_reason == "length"
    many = c.completions.create(model="model", prompt=["the", "dog"], n=2, max_tokens=20, temperature=0, seed=1)
    assert [ch.index for ch in many.choices] == [0, 1, 2, 3]
    assert [ch.text for ch in many.choices] == [reference("the", 20)] * 2 + [reference("dog", 20)] * 2
    echoed = c.completions.create(model="model", prompt=["the", "dog"], n=2, max_tokens=5, temperature=0, echo=True)
    assert [ch.text for ch in echoed.choices] == [p + reference(p, 5) for p in ("the", "the", "dog", "dog")]
    stopped = c.completions.create(model="model", prompt="ROMEO:", max_tokens=80, temperature=0, stop=["fox"])
    assert stopped.choices[0].finish_reason == "stop" and "fox" not in stopped.choices[0].text
    assert reference("ROMEO:", 80).startswith(stopped.choices[0].text + "fox")


def test_a_seed_gives_its_text_and_each_of_n_choices_its_own(served, reference):
    """Choice j of a seeded request samples with seed + j: its two choices first differ (so the near-certain
    fixture really samples at these settings), then the same request gives the same texts, the engine's."""
    sampled = {"temperature": 1.5, "top_k": 12, "top_p": 0.98}

    def texts(seed: int) -> list[str]:
        done = client(served).completions.create(model="model", prompt="ROMEO:", max_tokens=90, n=2, seed=seed,
                                                 temperature=1.5, top_p=0.98, extra_body={"top_k": 12})
        return [ch.text for ch in done.choices]

    first = texts(42)
    assert first[0] != first[1]
    assert texts(42) == first == [reference("ROMEO:", 90, seed=seed, **sampled) for seed in (42, 43)]


def test_the_v1_routes_need_the_key(served):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.post(f"{served}/v1/completions", json={"model": "model"}, headers=headers, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        client(served, "wrong").completions.create(model="model", prompt="t", max_tokens=1)
    assert httpx.get(f"{served}/health", timeout=10).json()["status"] == "ok"


BAD = [  # (body, status, param, phrase of the message)
    (b"{not json", 400, None, "not valid JSON"),
    (b"[1, 2]", 400, None, "must be a JSON object"),
    ({"prompt": "t"}, 400, "model", "missing required field 'model'"),
    ({"model": "model", "prompt": 5}, 400, "prompt", "prompt"),
    ({"model": "model", "max_tokens": "5"}, 400, "max_tokens", "valid integer"),
    ({"model": "model", "temperature": "hot"}, 400, "temperature", "valid number"),
    ({"model": "model", "stream": "yes"}, 400, "stream", "valid boolean"),
    ({"model": "model", "max_token": 5}, 400, "max_token", "unknown field 'max_token'"),
    ({"model": "model", "prompt": "ROMEO é"}, 400, "prompt", "not in the model's vocabulary: 'é'"),
    ({"model": "model", "max_tokens": 0}, 400, "max_tokens", "max_tokens must be in [1, 100000], got 0"),
    ({"model": "model", "max_tokens": 100001}, 400, "max_tokens", "got 100001"),
    ({"model": "model", "temperature": -1}, 400, "temperature", "temperature must be >= 0"),
    ({"model": "model", "top_p": 0}, 400, "top_p", "top_p must be in (0, 1]"),
    ({"model": "model", "top_p": 1.5}, 400, "top_p", "top_p must be in (0, 1]"),
    ({"model": "model", "top_k": -2}, 400, "top_k", "top_k must be >= 0"),
    ({"model": "model", "n": 0}, 400, "n", "n must be in [1, 16]"),
    ({"model": "model", "n": 17}, 400, "n", "n must be in [1, 16]"),
    ({"model": "model", "prompt": []}, 400, "prompt", "non-empty list"),
    ({"model": "model", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "at most 4"),
    ({"model": "model", "logprobs": 2}, 400, "logprobs", "not supported"),
    ({"model": "model", "prompt": "t" * (1 << 20)}, 400, None, "limit"),
    ({"model": "gpt-4"}, 404, "model", "does not exist"),
]


def test_bad_requests_get_openais_error_object_and_the_stream_in_flight_goes_on(served, reference):
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(timeout=60, headers=headers) as http:
        with http.stream("POST", f"{served}/v1/completions", json={"model": "model", "prompt": "ROMEO:",
                         "max_tokens": 3000, "temperature": 0, "stream": True}) as stream:
            events = sse(stream)
            text = next(events)["choices"][0]["text"]
            for body, status, param, phrase in BAD:
                content = body if isinstance(body, bytes) else json.dumps(body).encode()
                r = http.post(f"{served}/v1/completions", content=content)
                assert r.status_code == status, (body, r.text)
                error = r.json()["error"]
                assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, error
                assert phrase in error["message"], error
            text += "".join(e["choices"][0]["text"] for e in events)
    assert text == reference("ROMEO:", 3000)
    metrics = httpx.get(f"{served}/metrics", timeout=10).text
    assert 'gpt_requests_total{outcome="invalid"}' in metrics and "gpt_time_to_first_token_seconds_bucket" in metrics
    for name in ("gpt_inter_token_latency_seconds_count", "gpt_queue_depth", "gpt_active_slots",
                 "gpt_completion_tokens"):
        assert name in metrics


def test_a_full_queue_answers_429_with_retry_after(exported):
    long = {"model": "model", "prompt": "ROMEO:", "max_tokens": 1_000_000, "temperature": 0, "stream": True}
    with Engine(exported[0], slots=1, threads=1, max_queue=1) as engine, server_thread(
            engine, Settings(max_tokens_limit=1_000_000)) as url, httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{url}/v1/completions", json=long) as first:
            events = sse(first)  # kept: a dropped iterator closes the connection (a disconnect)
            next(events)
            with http.stream("POST", f"{url}/v1/completions", json=long) as second:
                assert second.status_code == 200  # queued, not refused
                r = http.post(f"{url}/v1/completions", json={**long, "stream": False})
                assert r.status_code == 429 and r.headers["Retry-After"] == "1"
                assert r.json()["error"]["code"] == "queue_full"
        assert wait_until(lambda: engine.stats()["active"] == 0 and engine.stats()["waiting"] == 0)




def test_a_client_that_disconnects_frees_its_slot_and_others_are_unaffected(exported, reference):
    with Engine(exported[0], slots=3, threads=1) as engine, server_thread(
            engine, Settings(max_tokens_limit=1_000_000)) as url, httpx.Client(timeout=30) as http:
        body = {"model": "model", "temperature": 0, "stream": True}
        with http.stream("POST", f"{url}/v1/completions", json={**body, "prompt": "the", "max_tokens": 4000}) as other:
            events = sse(other)
            text = next(events)["choices"][0]["text"]
            with http.stream("POST", f"{url}/v1/completions",
                             json={**body, "prompt": "ROMEO:", "max_tokens": 1_000_000}) as gone:
                gone_events = sse(gone)
                next(gone_events)
                assert engine.stats()["active"] == 2
            assert wait_until(lambda: engine.stats()["active"] == 1)  # the disconnected one's slot is free
            text += "".join(e["choices"][0]["text"] for e in events)
        assert text == reference("the", 4000)


def test_an_exception_inside_one_request_ends_it_with_an_error_event(exported, reference, monkeypatch):
    engine = Engine(exported[0], slots=3, threads=1)
    advance = engine._advance
    target = engine.tokenizer.encode("dog")

    def faulty(i: int, token: int) -> None:
        slot = engine.scheduler.slots[i]
        if slot.request.prompt_ids == target and slot.generated == 5:
            raise ValueError("a bug in one request")
        advance(i, token)

    monkeypatch.setattr(engine, "_advance", faulty)
    with engine, server_thread(engine) as url:
        c = client(url)
        with pytest.raises(openai.APIError, match="internal error"):
            for _ in c.completions.create(model="model", prompt="dog", max_tokens=50, temperature=0, stream=True):
                pass
        r = httpx.post(f"{url}/v1/completions", json={"model": "model", "prompt": "dog", "max_tokens": 50},
                       timeout=30)
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
        done = c.completions.create(model="model", prompt="the", max_tokens=50, temperature=0)
        assert done.choices[0].text == reference("the", 50)


def test_a_request_past_its_deadline_fails_clearly(exported):
    with Engine(exported[0], slots=2, threads=1) as engine, server_thread(
            engine, Settings(max_tokens_limit=1_000_000, request_timeout=0.3)) as url:
        body = {"model": "model", "prompt": "ROMEO:", "max_tokens": 1_000_000}
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
        assert r.status_code == 504 and "timeout of 0.3 s" in r.json()["error"]["message"]
        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=30) as s:
            events = list(sse(s))
        assert events[-1]["error"]["code"] == "timeout"


def test_a_stream_interval_sends_fewer_chunks_and_the_same_text(exported, reference):
    interval = 0.05
    with Engine(exported[0], slots=2, threads=1) as engine, server_thread(
            engine, Settings(max_tokens_limit=100_000, stream_interval=interval)) as url:
        body = {"model": "model", "prompt": "ROMEO:", "max_tokens": 20_000, "temperature": 0, "stream": True}
        start = time.monotonic()
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as s:
            events = list(sse(s))
        elapsed = time.monotonic() - start
    texts = [e["choices"][0]["text"] for e in events if e["choices"][0]["text"]]
    assert "".join(texts) == reference("ROMEO:", 20_000)
    assert len(texts) <= elapsed / interval + 2  # at most one chunk an interval, the first at once
    assert len(texts) < 20_000 / 10  # hundreds of characters a chunk, not one


def test_sigterm_finishes_the_streams_in_flight_then_exits_0(exported, reference):
    with server_process(exported[0], "--drain-timeout", "30", "--max-tokens-limit", "100000") as (url, proc):
        body = {"model": "model", "prompt": "ROMEO:", "max_tokens": 20000, "temperature": 0}
        text, finish_reason = stream_through_sigterm(url, proc, body)
        assert finish_reason == "length" and text == reference("ROMEO:", 20000)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", timeout=2)


def test_after_sigkill_a_restarted_server_serves_again(exported, reference):
    port = free_port()
    with server_process(exported[0], "--max-tokens-limit", "1000000", port=port) as (url, proc):
        body = {"model": "model", "prompt": "ROMEO:", "max_tokens": 1_000_000, "temperature": 0, "stream": True}
        with pytest.raises(httpx.HTTPError), httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as s:
            events = sse(s)
            next(events)
            proc.kill()
            for _ in events:  # the stream breaks off: the client sees an error, never a hang
                pass
    with server_process(exported[0], port=port) as (url, _):
        done = client(url).completions.create(model="model", prompt="the", max_tokens=30, temperature=0)
        assert done.choices[0].text == reference("the", 30)


@pytest.mark.parametrize("flag, spinning", [((), "0"), (("--spin",), "1")], ids=["default", "--spin"])
def test_the_servers_onnxruntime_workers_sleep_between_ops_unless_told_to_spin(exported, monkeypatch, flag,
                                                                              spinning):
    """Spinning workers took the CPU the server's HTTP side and its clients needed on 2 cores (docs/serving.md):
    the engine gpt.serve builds has spinning off, unless --spin."""
    import gpt.engine
    from gpt.decode.backends import ort_session
    from gpt.serve.__main__ import main

    monkeypatch.setattr(ort_session, "_spinning", True)  # the process's policy as it was, after the test
    real, seen = gpt.engine.Engine, []

    class Built(Exception):
        pass

    def engine(*args, **kwargs):
        with real(*args, **kwargs) as e:
            options = e.runner.session.get_session_options()
            try:
                seen.append(options.get_session_config_entry("session.intra_op.allow_spinning"))
            except RuntimeError:  # not set: onnxruntime's default, spinning
                seen.append("1")
        raise Built

    monkeypatch.setattr(gpt.engine, "Engine", engine)
    with pytest.raises(Built):
        main(["--onnx", str(exported[0]), "--port", str(free_port()), "--threads", "2", *flag])
    assert seen == [spinning]


def test_a_port_in_use_is_one_line(exported):
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "gpt.serve", "--onnx", str(exported[0]), "--port", str(port)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
