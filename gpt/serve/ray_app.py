"""gpt.serve as a Ray Serve application: replicas of one engine behind Ray's HTTP proxy.

    python -m gpt.serve --ray --onnx out/model.onnx --replicas 2 --threads 1      # a local Ray cluster
    serve run gpt.serve.ray_app:app onnx=/abs/out/model.onnx replicas=2 threads=1  # Ray's own CLI / config files

Each replica is one Ray actor holding one `Engine` (its own onnxruntime session with --threads threads, reserved
from Ray as that many CPUs, so Ray places no more replicas on a node than its cores hold) and the very app of the
single-process server (`gpt.serve.app.create_app`: the same routes, streaming included). Ray's proxy routes each
request to the less loaded of two replicas, replaces a replica whose process dies, and scales between --autoscale
MIN:MAX aiming at --slots requests per replica. Ray adds two things to the app: `/health` lists every live
replica's engine (`replicas`), and `/metrics` is every replica's metrics, each sample labelled `replica`.
Ray's proxy gets one middleware (gpt.serve.ray_proxy: a stream whose replica died ends with an error event).

The model reaches a replica by path, not through Ray's object store: an object lives as long as the process
that put it, and Ray restarts replicas long after a `serve run` driver is gone. A relative path is relative to
the replica's working directory: on a cluster, give a path every node has, or ship the file's folder with
`serve run --working-dir DIR ... onnx=model.onnx` (Ray copies it to each node once).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Any

import ray
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from ray import serve
from ray.serve import Application

from gpt.engine import Engine
from gpt.serve.app import create_app
from gpt.serve.options import Settings, autoscale_range, build_parser, check, settings
from gpt.serve.ray_proxy import PROXY_ENV

DEPLOYMENT = "gpt"
BROADCAST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ReplicaConfig:
    onnx: str
    slots: int
    threads: int
    max_queue: int
    prefill_chunk: int
    settings: Settings


class RayFleet:
    """The replicas of this deployment, asked all at once (Ray's broadcast) for /health and /metrics."""

    def __init__(self, deployment: str, app_name: str, replica: str):
        self.deployment, self.app_name, self.replica, self._handle = deployment, app_name, replica, None

    async def _ask(self, method: str) -> tuple[list[Any], int]:
        if self._handle is None:
            self._handle = serve.get_deployment_handle(self.deployment, self.app_name)
        answers = await self._handle.broadcast(method).results_async(timeout_s=BROADCAST_TIMEOUT_S,
                                                                      return_exceptions=True)
        good = [a for a in answers if not isinstance(a, BaseException)]
        return good, len(answers) - len(good)

    async def health(self) -> dict:
        reports, unreachable = await self._ask("report")
        return {"replica": self.replica, "replicas": sorted(reports, key=lambda r: r["replica"]),
                "unreachable": unreachable}

    async def metrics(self) -> bytes:
        texts, _ = await self._ask("metrics_text")
        return labelled(texts)


def labelled(texts: list[tuple[str, bytes]]) -> bytes:
    """Several replicas' Prometheus texts as one, every sample labelled with its replica."""
    families: dict[str, Metric] = {}
    for replica, text in sorted(texts):
        for family in text_string_to_metric_families(text.decode()):
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                             family.unit))
            for s in family.samples:
                merged.add_sample(s.name, {**s.labels, "replica": replica}, s.value, s.timestamp, s.exemplar)

    class Merged:
        def collect(self):
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged())
    return generate_latest(registry)


@serve.ingress()
class Replica:
    """One engine and the single-process server's app, in one Ray actor."""

    def __init__(self, config: ReplicaConfig):
        self.engine = Engine(config.onnx, slots=config.slots, threads=config.threads, max_queue=config.max_queue,
                             prefill_chunk=config.prefill_chunk)
        context = serve.get_replica_context()
        self.name = context.replica_id.unique_id
        self.http = create_app(self.engine, config.settings, fleet=RayFleet(context.deployment, context.app_name,
                                                                            self.name))

    def __serve_build_asgi_app__(self):
        return self.http

    def check_health(self) -> None:
        """Ray's periodic probe: a replica whose scheduler thread has stopped is replaced."""
        if not self.engine.running:
            raise RuntimeError("the engine's scheduler thread has stopped")

    def report(self) -> dict:
        return {"replica": self.name, "pid": os.getpid(), **self.engine.stats()}

    def stop_accepting(self) -> None:
        """The first half of a drain (gpt.serve --ray on SIGTERM): new requests get 503, the running ones go on."""
        self.engine.stop_accepting()

    def metrics_text(self) -> tuple[str, bytes]:
        return self.name, generate_latest(self.http.state.metrics.registry)

    async def __del__(self):  # Ray's shutdown; under `gpt.serve --ray`, after `drain` has emptied the engine
        self.engine.close()
        await super().__del__()  # the ASGI wrapper's own shutdown


def init_ray(**options: Any) -> None:
    """`ray.init(**options)` with a runtime env that carries PROXY_ENV to the Serve controller this job starts
    and through it to Ray's proxies: a stream whose replica dies then ends with an error event."""
    ray.init(**options, runtime_env={"env_vars": PROXY_ENV})


def drain(app_name: str, timeout: float) -> None:
    """Let every replica finish what it holds, for up to `timeout` s, taking nothing new. Ray's own shutdown
    stops its proxy at once, which would cut every stream in flight."""
    handle = serve.get_deployment_handle(DEPLOYMENT, app_name)
    handle.broadcast("stop_accepting").results(timeout_s=BROADCAST_TIMEOUT_S, return_exceptions=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reports = handle.broadcast("report").results(timeout_s=BROADCAST_TIMEOUT_S, return_exceptions=True)
        if all(isinstance(r, BaseException) or not (r["active"] or r["waiting"]) for r in reports):
            return
        time.sleep(0.1)


def application(options: argparse.Namespace) -> Application:
    """The Ray Serve application for checked `gpt.serve` options (`--threads` defaults to 1 per replica)."""
    threads = options.threads or 1
    scaling: dict[str, Any] = {"num_replicas": options.replicas or 1}
    if options.autoscale is not None:
        low, high = autoscale_range(options.autoscale)
        scaling = {"autoscaling_config": {"min_replicas": low, "max_replicas": high,
                                          "target_ongoing_requests": options.slots}}
    deployment = serve.deployment(
        Replica, name=DEPLOYMENT, ray_actor_options={"num_cpus": threads},
        max_ongoing_requests=options.slots + options.max_queue,  # the engine's own limit answers 429 past it
        graceful_shutdown_timeout_s=options.drain_timeout, health_check_period_s=2,
        max_constructor_retry_count=3, **scaling)
    config = ReplicaConfig(onnx=str(options.onnx), slots=options.slots, threads=threads, max_queue=options.max_queue,
                           prefill_chunk=options.prefill_chunk, settings=settings(options))
    return deployment.bind(config)


def app(args: dict[str, Any]) -> Application:
    """`serve run gpt.serve.ray_app:app onnx=... replicas=2`: gpt.serve's options spelled key=value (`_` or `-`),
    checked by the same parser. Host and port are Ray's (`serve run` / the config's http_options)."""
    argv: list[str] = []
    for key, value in args.items():
        argv += [f"--{str(key).replace('_', '-')}", str(value)]
    options = build_parser().parse_args(argv)
    options.ray = True  # the Ray defaults (--threads 1, --stream-interval) hold here too
    check(options)
    return application(options)
