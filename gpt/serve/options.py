"""`python -m gpt.serve`'s options: one parser and one check for the single-process server, the Ray Serve
application (`--ray`) and its `serve run gpt.serve.ray_app:app key=value ...` builder alike."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from gpt.data import DEFAULT_DATA_DIR
from gpt.decode.speculative.drafters import SPECULATIVE_HELP, SPECULATIVE_METAVAR
from gpt.decode.speculative.loop import DEFAULT_DRAFT_TOKENS
from gpt.engine import DEFAULT_MAX_QUEUE, DEFAULT_SLOTS
from gpt.engine.core import DEFAULT_SPECULATE_ROWS
from gpt.errors import ArgumentParser, GPTError, add_threads

API_KEY_ENV = "GPT_API_KEY"
PROG = "python -m gpt.serve"
RAY_STREAM_INTERVAL = 0.02  # s; Ray Serve's proxy spends 0.1-0.2 ms of CPU a chunk (README, Serving on a cluster)


@dataclass(frozen=True)
class Settings:
    """What the HTTP layer needs to know (gpt.serve.app), beside the engine."""

    model_name: str = "model"
    api_key: str | None = None
    max_tokens_limit: int = 4096
    request_timeout: float | None = None  # seconds per request, queue included
    max_body_bytes: int = 1 << 20
    retry_after_s: int = 1
    stream_interval: float = 0.0  # seconds a stream waits after a chunk before it sends the next


class _Parser(ArgumentParser):
    """Raises `GPTError` (one line under `run_cli`), so a Ray application builder gets an exception, not exit."""

    def error(self, message: str) -> NoReturn:
        raise GPTError(f"{message} (see `{PROG} --help`)")


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=description,
                allow_abbrev=False)  # a Ray config key must be spelled out: `replica: 2` is no `replicas`
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
    add_threads(p, "onnxruntime intra-op threads (default: the cores; with --ray 1 per replica)")
    p.add_argument("--spin", action="store_true",
                   help="keep onnxruntime's worker threads spinning between ops (its own default): faster only when "
                        "nothing else needs the cores, not its clients, nor the server's own HTTP side")
    p.add_argument("--model-name", default=None, help="the model id clients send (default: the file's stem)")
    p.add_argument("--api-key", default=None, help=f"require this Bearer key (default: ${API_KEY_ENV}, or none)")
    p.add_argument("--max-tokens-limit", type=int, default=4096, help="largest max_tokens accepted (default: 4096)")
    p.add_argument("--request-timeout", type=float, default=None,
                   help="seconds a request may take, queue included (default: none)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds to finish streams in flight on SIGTERM (default: 30)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default: 1 MiB)")
    p.add_argument("--stream-interval", type=float, default=None, metavar="SECONDS",
                   help="least time between two chunks of a stream: the characters made meanwhile go as one "
                        f"(default: 0, with --ray {RAY_STREAM_INTERVAL}: each chunk costs the proxy CPU)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    spec = p.add_argument_group("speculative decoding: rows draft characters and verify them in one run")
    spec.add_argument("--speculative", metavar=SPECULATIVE_METAVAR, default=None, help=SPECULATIVE_HELP)
    spec.add_argument("--draft-tokens", type=int, default=DEFAULT_DRAFT_TOKENS, metavar="K",
                      help=f"drafts per verify run, 1 .. block_size / 2; a request's `draft_tokens` may ask for "
                           f"fewer or 0 (default: {DEFAULT_DRAFT_TOKENS})")
    spec.add_argument("--speculate-rows", type=int, default=DEFAULT_SPECULATE_ROWS, metavar="R",
                      help="speculate while at most R rows decode; past that, plain batched steps, cheaper per "
                           f"character at that load (default: {DEFAULT_SPECULATE_ROWS})")
    spec.add_argument("--ngram-text", type=Path, default=None, metavar="FILE",
                      help="the training text the ngram index or the distilled table is made from, once "
                           "(default: DATA_DIR's Tiny Shakespeare)")
    spec.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where gpt.data put Tiny Shakespeare")
    ray = p.add_argument_group("Ray Serve (--ray): replicas of the engine behind Ray's HTTP proxy")
    ray.add_argument("--ray", action="store_true", help="serve as a Ray Serve application (extra `ray`)")
    ray.add_argument("--replicas", type=int, default=None, help="engines, one process each (default: 1)")
    ray.add_argument("--autoscale", metavar="MIN:MAX", default=None,
                     help="let Ray scale between MIN and MAX replicas, aiming at --slots requests each")
    ray.add_argument("--ray-address", default=None,
                     help="a running cluster (`auto`, or HOST:PORT of `ray start --head`); default: start a "
                          "local one on this machine")
    return p


def check(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise GPTError(f"--port must be in [0, 65535], got {args.port}")
    for name in ("slots", "max_tokens_limit", "max_body_bytes"):
        if getattr(args, name) < 1:
            raise GPTError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.request_timeout is not None and not args.request_timeout > 0:
        raise GPTError(f"--request-timeout must be > 0 seconds, got {args.request_timeout}")
    if args.stream_interval is not None and not 0 <= args.stream_interval <= 1:
        raise GPTError(f"--stream-interval must be in [0, 1] seconds, got {args.stream_interval}")
    if not args.drain_timeout >= 0:
        raise GPTError(f"--drain-timeout must be >= 0 seconds, got {args.drain_timeout}")
    if args.speculative and args.ray:
        raise GPTError("--speculative runs in the single-process server; with --ray each replica decodes plainly")
    ray_only = [f"--{n.replace('_', '-')}" for n in ("replicas", "autoscale", "ray_address")
                if getattr(args, n) is not None]
    if ray_only and not args.ray:
        raise GPTError(f"{' and '.join(ray_only)} need --ray (replicas on Ray Serve)")
    if args.replicas is not None and args.replicas < 1:
        raise GPTError(f"--replicas must be >= 1, got {args.replicas}")
    if args.autoscale is not None:
        if args.replicas is not None:
            raise GPTError("--replicas and --autoscale exclude each other: a fixed count, or a range for Ray")
        autoscale_range(args.autoscale)


def autoscale_range(text: str) -> tuple[int, int]:
    """`--autoscale MIN:MAX` as (min, max), 0 <= MIN <= MAX, MAX >= 1."""
    low, sep, high = text.partition(":")
    if not (sep and low.isdigit() and high.isdigit()) or not int(low) <= int(high) or int(high) < 1:
        raise GPTError(f"--autoscale must be MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, got {text!r}")
    return int(low), int(high)


def engine_options(args: argparse.Namespace) -> dict:
    """The `gpt.engine.Engine` keywords of the command line."""
    options = {"slots": args.slots, "threads": args.threads, "max_queue": args.max_queue,
               "prefill_chunk": args.prefill_chunk}
    if args.speculative:
        options |= {"speculative": args.speculative, "draft_tokens": args.draft_tokens,
                    "speculate_rows": args.speculate_rows, "ngram_text": args.ngram_text, "data_dir": args.data_dir,
                    "say": lambda line: print(line, file=sys.stderr, flush=True)}
    return options


def settings(args: argparse.Namespace) -> Settings:
    return Settings(model_name=args.model_name or args.onnx.stem,
                    api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
                    max_tokens_limit=args.max_tokens_limit, request_timeout=args.request_timeout,
                    max_body_bytes=args.max_body_bytes, stream_interval=stream_interval(args))


def stream_interval(args: argparse.Namespace) -> float:
    if args.stream_interval is not None:
        return args.stream_interval
    return RAY_STREAM_INTERVAL if args.ray else 0.0


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


def check_ray_address(address: str | None) -> None:
    """A HOST:PORT that nothing answers on is one line within seconds (ray.init would retry for minutes)."""
    if address is None or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise GPTError(f"--ray-address {address}: no Ray cluster answers there ({e}); start one with "
                       "`ray start --head`, or leave --ray-address out to start a local one") from None
