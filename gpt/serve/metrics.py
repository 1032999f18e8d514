"""The server's Prometheus metrics, in a registry of their own (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gpt.engine import Engine

# latency buckets in seconds: a decode step is ~0.3-3 ms on 2 cores, a queued request waits seconds
LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, engine: Engine):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("gpt_requests", "HTTP completion requests by outcome (ok, or why not)",
                                ["outcome"], registry=r)
        self.prompt_tokens = Counter("gpt_prompt_tokens", "Prompt tokens (characters) received", registry=r)
        self.completion_tokens = Counter("gpt_completion_tokens", "Tokens (characters) generated", registry=r)
        self.ttft = Histogram("gpt_time_to_first_token_seconds", "From a request's arrival to its first text",
                              buckets=LATENCY, registry=r)
        self.itl = Histogram("gpt_inter_token_latency_seconds", "Between two texts of one streamed choice",
                             buckets=LATENCY, registry=r)
        Gauge("gpt_queue_depth", "Requests waiting for a slot", registry=r).set_function(
            lambda: engine.stats()["waiting"])
        Gauge("gpt_active_slots", "Slots holding a request", registry=r).set_function(
            lambda: engine.stats()["active"])
        Gauge("gpt_slots", "Slots (rows of the shared KV cache)", registry=r).set(engine.slots)
        self.steps = Gauge("gpt_decode_steps", "Decode steps run by the engine", registry=r)
        self.steps.set_function(lambda: engine.stats()["steps"])
        for key, what in (("runs", "Speculative verify runs (each writes 1 + the drafts accepted)"),
                          ("proposed", "Drafted characters checked by verify runs"),
                          ("accepted", "Drafted characters accepted (the text plain decoding would write)")):
            Gauge(f"gpt_draft_{key}", what, registry=r).set_function(lambda key=key: engine.stats()[f"draft_{key}"])
