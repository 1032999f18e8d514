"""Serve the gqa file over OpenAI's completions API: `python -m gpt.serve --onnx out/model.onnx`.

Every concurrent request joins one continuous batch (gpt.engine): up to --slots decode together, each at its
own length; more wait in a queue of --max-queue, and beyond it the server answers 429 with Retry-After.

    curl -N http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"model": "model", "prompt": "ROMEO:", "max_tokens": 200, "stream": true}'

Binds to 127.0.0.1 unless --host says otherwise. With --api-key (or GPT_API_KEY in the environment) the /v1
routes need `Authorization: Bearer <key>`. SIGTERM or Ctrl-C: stop accepting, let the streams in flight finish
for up to --drain-timeout seconds, exit 0.

With --ray the same app runs in --replicas engines (or --autoscale MIN:MAX), one Ray actor each, behind Ray
Serve's HTTP proxy on --host:--port (gpt.serve.ray_app; `pip install 'shakespeare-gpt[ray]'`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from gpt.errors import GPTError, flag_names, run_cli
from gpt.serve import options
from gpt.serve.options import autoscale_range, build_parser, check, check_port, check_ray_address, settings


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    check(args)
    check_port(args.host, args.port)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    return serve_on_ray(args) if args.ray else serve_here(args)


def serve_here(args: argparse.Namespace) -> int:
    try:
        import uvicorn
        from sse_starlette.sse import AppStatus

        from gpt.serve.app import create_app
    except ImportError as e:
        raise GPTError(f"gpt.serve needs its extra: pip install 'shakespeare-gpt[serve]' ({e.name} is missing)"
                       ) from None
    from gpt.decode.backends.ort_session import spin_workers
    from gpt.engine import Engine

    spin_workers(args.spin)  # the HTTP side and the clients share these cores
    with flag_names("slots", "max_queue", "prefill_chunk", "speculative", "draft_tokens", "speculate_rows"):
        engine = Engine(args.onnx, **options.engine_options(args))
    served = settings(args)
    app = create_app(engine, served)
    AppStatus.disable_automatic_graceful_drain()  # on SIGTERM streams finish (up to --drain-timeout), not cut
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=args.drain_timeout, access_log=args.log_level == "debug")
    server = uvicorn.Server(config)
    print(f"serving {args.onnx} as {served.model_name!r} on http://{args.host}:{args.port} with "
          f"{args.slots} slots", file=sys.stderr, flush=True)
    # uvicorn handles SIGTERM/SIGINT while it runs (stop accepting, drain) and raises the signal again once
    # done, under the handlers it found: these make that second delivery a no-op, so a drained server exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run()
    finally:
        engine.close(drain_timeout=0)
    return 0


def serve_on_ray(args: argparse.Namespace) -> int:
    try:
        import ray
        from ray import serve

        from gpt.serve.ray_app import application, drain, init_ray
    except ImportError as e:
        raise GPTError(f"gpt.serve --ray needs its extra: pip install 'shakespeare-gpt[ray]' ({e.name} is missing)"
                       ) from None
    from gpt.engine.runner import SlotRunner

    check_ray_address(args.ray_address)
    SlotRunner(args.onnx, slots=1, threads=1)  # the file's problems in one line here, not in every replica's log
    args.onnx = args.onnx.resolve()  # the replicas' working directory is not ours
    stop = threading.Event()
    init_ray(address=args.ray_address, logging_level=args.log_level.upper())
    # After ray.init (whose own SIGTERM handler aborts the process) and before the app is up: a SIGTERM as soon
    # as the endpoint answers already finds this handler.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if args.ray_address is None:  # a cluster of this machine alone: replicas it cannot place would wait forever
            need_cpus(args, int(ray.cluster_resources().get("CPU", 0)))
        serve.start(http_options={"host": args.host, "port": args.port})
        try:
            serve.run(application(args), name="gpt", route_prefix="/")
        except RuntimeError as e:  # a replica that cannot start: Ray has logged why, replica by replica
            raise GPTError(f"Ray Serve could not start the replicas ({' '.join(str(e).split())[:200]}); their "
                           "logs: /tmp/ray/session_latest/logs/serve/") from None
        scale = f"{args.autoscale} replicas (autoscaled)" if args.autoscale else f"{args.replicas or 1} replica(s)"
        print(f"serving {args.onnx} as {settings(args).model_name!r} on http://{args.host}:{args.port} through Ray "
              f"Serve: {scale} x {args.slots} slots, {args.threads or 1} thread(s) each", file=sys.stderr,
              flush=True)
        stop.wait()
        print(f"shutting down: the requests in flight finish first (up to {args.drain_timeout:g} s)",
              file=sys.stderr, flush=True)
        drain("gpt", args.drain_timeout)
    finally:
        # Our application only, if the cluster is someone else's; Serve and the local cluster if we started it.
        if args.ray_address is None:
            serve.shutdown()
        else:
            serve.delete("gpt")
        ray.shutdown()
    return 0


def need_cpus(args: argparse.Namespace, cpus: int) -> None:
    replicas = autoscale_range(args.autoscale)[0] if args.autoscale else args.replicas or 1
    threads = args.threads or 1
    if replicas * threads > cpus:
        raise GPTError(f"{replicas} replica(s) x {threads} thread(s) need {replicas * threads} CPUs; this machine's "
                       f"Ray cluster has {cpus}: fewer --replicas or --threads, or join a bigger cluster with "
                       "--ray-address")


if __name__ == "__main__":
    run_cli(main)
