"""Serve the gqa file over OpenAI's completions API: `python -m gpt.serve --onnx out/model.onnx`.

Every concurrent request joins one continuous batch (gpt.engine): up to --slots decode together, each at its
own length; more wait in a queue of --max-queue, and beyond it the server answers 429 with Retry-After.

    curl -N http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"model": "model", "prompt": "ROMEO:", "max_tokens": 200, "stream": true}'

Binds to 127.0.0.1 unless --host says otherwise. With --api-key (or GPT_API_KEY in the environment) the /v1
routes need `Authorization: Bearer <key>`. SIGTERM or Ctrl-C: stop accepting, let the streams in flight finish
for up to --drain-timeout seconds, exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from gpt.engine import DEFAULT_MAX_QUEUE, DEFAULT_SLOTS
from gpt.errors import ArgumentParser, GPTError, run_cli

API_KEY_ENV = "GPT_API_KEY"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m gpt.serve", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", type=Path, default=Path("out/model.onnx"),
                   help="gqa ONNX file from `python -m export.onnx` (default: out/model.onnx)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    p.add_argument("--slots", type=int, default=DEFAULT_SLOTS,
                   help=f"requests decoded together: rows of the shared KV cache (default: {DEFAULT_SLOTS})")
    p.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                   help=f"requests that may wait for a slot before 429 (default: {DEFAULT_MAX_QUEUE})")
    p.add_argument("--prefill-chunk", type=int, default=0,
                   help="prompt tokens prefilled per engine step while others decode (default: 0 = whole prompt)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: cores)")
    p.add_argument("--model-name", default=None, help="the model id clients send (default: the file's stem)")
    p.add_argument("--api-key", default=None, help=f"require this Bearer key (default: ${API_KEY_ENV}, or none)")
    p.add_argument("--max-tokens-limit", type=int, default=4096, help="largest max_tokens accepted (default: 4096)")
    p.add_argument("--request-timeout", type=float, default=None,
                   help="seconds a request may take, queue included (default: none)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds to finish streams in flight on SIGTERM (default: 30)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default: 1 MiB)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def check(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise GPTError(f"--port must be in [0, 65535], got {args.port}")
    for name in ("slots", "max_tokens_limit", "max_body_bytes"):
        if getattr(args, name) < 1:
            raise GPTError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise GPTError(f"--threads must be >= 1, got {args.threads}")
    if args.request_timeout is not None and not args.request_timeout > 0:
        raise GPTError(f"--request-timeout must be > 0 seconds, got {args.request_timeout}")
    if not args.drain_timeout >= 0:
        raise GPTError(f"--drain-timeout must be >= 0 seconds, got {args.drain_timeout}")


def check_port(host: str, port: int) -> None:
    """Fail in one line before the model loads if the address cannot be listened on."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise GPTError(f"cannot listen on {host}:{port}: {e.strerror or e} (another server there? try --port)"
                       ) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check(args)
    check_port(args.host, args.port)
    try:
        import uvicorn
        from sse_starlette.sse import AppStatus

        from gpt.serve.app import Settings, create_app
    except ImportError as e:
        raise GPTError(f"gpt.serve needs its extra: pip install 'shakespeare-gpt[serve]' ({e.name} is missing)"
                       ) from None
    from gpt.engine import Engine

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    engine = Engine(args.onnx, slots=args.slots, threads=args.threads, max_queue=args.max_queue,
                    prefill_chunk=args.prefill_chunk)
    settings = Settings(model_name=args.model_name or args.onnx.stem,
                        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
                        max_tokens_limit=args.max_tokens_limit, request_timeout=args.request_timeout,
                        max_body_bytes=args.max_body_bytes)
    app = create_app(engine, settings)
    AppStatus.disable_automatic_graceful_drain()  # on SIGTERM streams finish (up to --drain-timeout), not cut
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=args.drain_timeout, access_log=args.log_level == "debug")
    server = uvicorn.Server(config)
    print(f"serving {args.onnx} as {settings.model_name!r} on http://{args.host}:{args.port} with {args.slots} slots",
          file=sys.stderr, flush=True)
    # uvicorn handles SIGTERM/SIGINT while it runs (stop accepting, drain) and raises the signal again once
    # done, under the handlers it found: these make that second delivery a no-op, so a drained server exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run()
    finally:
        engine.close(drain_timeout=0)
    return 0


if __name__ == "__main__":
    run_cli(main)
