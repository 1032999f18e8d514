"""gpt.serve.ray_proxy: the middleware Ray's proxy runs, tested without Ray on raw ASGI apps that stand in for
a replica (one that dies mid-stream, one that finishes)."""

from __future__ import annotations

import json

import pytest
from servers import sse
from starlette.testclient import TestClient

from gpt.serve.ray_proxy import CUT_MESSAGE, EndCutStreams

openai = pytest.importorskip("openai")

CHUNK = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "model",
         "choices": [{"text": "ROM", "index": 0, "logprobs": None, "finish_reason": None}]}
EVENT_STREAM = [(b"content-type", b"text/event-stream; charset=utf-8")]


def replica(ends: bool, headers: list = EVENT_STREAM):
    """A stand-in for the replica behind Ray's proxy: one chunk, then the last body part, or nothing (it died)."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": f"data: {json.dumps(CHUNK)}\n\n".encode(), "more_body": True})
        if ends:
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    return app


def post(app) -> list[dict]:
    with TestClient(EndCutStreams(app)).stream("POST", "/v1/completions", json={}) as r:  # no lifespan: no `with`
        return list(sse(r))


def test_a_stream_its_replica_left_unended_ends_with_an_error_event_then_done():
    events = post(replica(ends=False))
    assert events[0] == CHUNK
    assert events[1:] == [{"error": {"message": CUT_MESSAGE, "type": "server_error", "param": None,
                                     "code": "replica_lost"}}]  # and sse() stopped at data: [DONE]


def test_the_openai_client_raises_the_error_with_its_message_after_the_text():
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="none", max_retries=0,
                           http_client=TestClient(EndCutStreams(replica(ends=False))))
    texts = []
    with pytest.raises(openai.APIError, match="the replica serving this stream stopped"):
        for chunk in client.completions.create(model="model", prompt="R", stream=True):
            texts.append(chunk.choices[0].text)
    assert texts == ["ROM"]


def test_finished_streams_and_other_responses_pass_unchanged():
    assert post(replica(ends=True)) == [CHUNK]
    json_app = EndCutStreams(replica(ends=False, headers=[(b"content-type", b"application/json")]))
    assert TestClient(json_app).post("/v1/completions", json={}).text == f"data: {json.dumps(CHUNK)}\n\n"
