"""An error event, not a cut body, for a stream whose Ray Serve replica died mid-way.

Ray's HTTP proxy relays a replica's ASGI messages to the client. When the replica's process dies after the
response has started, the proxy cannot send an error status any more and returns without ending the body: the
client sees the connection drop (openai: APIConnectionError). `EndCutStreams` runs inside the proxy, around its
ASGI app, and ends such a server-sent-events stream the way our own server ends a failed one: an OpenAI error
object as the last event, then `data: [DONE]` (openai: APIError with our message).

Ray loads proxy middlewares from the import path in RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH (`PROXY_ENV`),
read by each proxy process as it starts. A job's runtime env reaches the Serve controller the job starts and,
through it, the proxies: `python -m gpt.serve --ray` passes it (`ray_app.init_ray`), and so does
`serve run --runtime-env-json '{"env_vars": {...PROXY_ENV}}'`. Proxies of a Serve that is already running
need it in the environment of `ray start`.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.middleware import Middleware

from gpt.serve.protocol import DONE, error_body

PROXY_ENV = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "gpt.serve.ray_proxy:middlewares"}
CUT_MESSAGE = ("the replica serving this stream stopped before the stream ended (its process died or Ray "
               "cancelled the request); the text so far is all there is: send the request again")
CUT_EVENT = (f"data: {json.dumps(error_body(CUT_MESSAGE, 'server_error', None, 'replica_lost'))}\n\n"
             f"data: {DONE}\n\n").encode()


class EndCutStreams:
    """Pure ASGI middleware: an event stream the app returned from without its last body part gets CUT_EVENT."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = {"event_stream": False, "ended": False}

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                seen["event_stream"] = content_type.startswith(b"text/event-stream")
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                seen["ended"] = True
            await send(message)

        await self.app(scope, receive, watch)
        if seen["event_stream"] and not seen["ended"]:
            try:
                await send({"type": "http.response.body", "body": CUT_EVENT, "more_body": False})
            except OSError:  # the client has gone too: nobody to tell
                pass


def middlewares() -> list[Middleware]:
    """Ray's proxy callback (PROXY_ENV)."""
    return [Middleware(EndCutStreams)]
