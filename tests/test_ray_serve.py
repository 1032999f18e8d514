"""gpt.serve as a Ray Serve application (gpt.serve.ray_app): a local Ray cluster on 127.0.0.1, two replicas of one
thread each, driven by the official `openai` client; one replica SIGKILLed under load. Every wait is bounded;
Ray and Serve are shut down however the tests end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import ROOT, wait_until
from servers import HOST, free_port, server_process, sse, stream_through_sigterm

openai = pytest.importorskip("openai")
ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from gpt.engine import Engine, GenerationParams  # noqa: E402
from gpt.errors import GPTError  # noqa: E402
from gpt.serve.ray_app import app, init_ray  # noqa: E402

LIMIT = 20_000  # --max-tokens-limit: streams long enough (seconds) to be cut mid-way


@pytest.fixture(scope="module")
def cluster(exported) -> Iterator[str]:
    """`serve run gpt.serve.ray_app:app onnx=... replicas=2 threads=1` on a 2-CPU local cluster, Ray started as
    gpt.serve --ray starts it (its proxy ends a cut stream with an error event)."""
    port = free_port()
    init_ray(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        serve.start(http_options={"host": HOST, "port": port})
        serve.run(app({"onnx": str(exported[0]), "replicas": 2, "threads": 1, "slots": 8,
                       "max_tokens_limit": LIMIT}), name="gpt", route_prefix="/")
        yield f"http://{HOST}:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def reference(exported):
    with Engine(exported[0], slots=1, threads=1) as e:
        yield lambda prompt, n: e.generate([prompt], GenerationParams(max_tokens=n, temperature=0))[0]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=60)


def replicas(url: str) -> list[dict]:
    return httpx.get(f"{url}/health", timeout=10).json()["replicas"]


def test_the_ray_app_serves_the_same_greedy_text_plain_and_streamed(cluster, reference):
    c = client(cluster)
    for prompt in ("ROMEO:", "the dog", "\n"):
        done = c.completions.create(model="model", prompt=prompt, max_tokens=60, temperature=0)
        assert done.choices[0].text == reference(prompt, 60) and done.choices[0].finish_reason == "length"
        chunks = list(c.completions.create(model="model", prompt=prompt, max_tokens=60, temperature=0, stream=True))
        assert "".join(ch.choices[0].text for ch in chunks) == reference(prompt, 60)
    with pytest.raises(openai.BadRequestError, match="max_tokens must be in"):
        c.completions.create(model="model", prompt="t", max_tokens=0)


def test_health_lists_every_replica_and_metrics_label_them(cluster):
    health = httpx.get(f"{cluster}/health", timeout=10).json()
    assert health["status"] == "ok" and health["unreachable"] == 0
    assert len(health["replicas"]) == 2 and health["replica"] in {r["replica"] for r in health["replicas"]}
    assert len({r["pid"] for r in health["replicas"]}) == 2 and all(r["slots"] == 8 for r in health["replicas"])
    for _ in range(6):
        client(cluster).completions.create(model="model", prompt="the", max_tokens=5, temperature=0)
    text = httpx.get(f"{cluster}/metrics", timeout=10).text
    for r in health["replicas"]:
        assert f'gpt_slots{{replica="{r["replica"]}"}} 8.0' in text
    ok = [float(line.split()[-1]) for line in text.splitlines() if line.startswith('gpt_requests_total{outcome="ok"')]
    assert sum(ok) >= 6


def test_a_killed_replica_fails_only_its_own_streams_and_ray_replaces_it(cluster, reference):
    streams, outcomes = 8, {}
    started = threading.Barrier(streams + 1, timeout=60)
    body = {"model": "model", "prompt": "ROMEO:", "max_tokens": LIMIT, "temperature": 0, "stream": True}

    def stream(i: int) -> None:
        with httpx.stream("POST", f"{cluster}/v1/completions", json=body, timeout=60) as s:
            events = sse(s)
            text = next(events)["choices"][0]["text"]
            started.wait()
            for event in events:
                if "error" in event:  # the last event before [DONE] (gpt.serve.ray_proxy), not a cut body
                    outcomes[i] = ("error", time.monotonic(), event["error"])
                    return
                text += event["choices"][0]["text"]
        outcomes[i] = ("done", text)

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(streams)]
    for t in threads:
        t.start()
    started.wait()  # every stream has its first text: all 8 are in flight
    before = replicas(cluster)
    victim = max(before, key=lambda r: r["active"])
    assert sum(r["active"] for r in before) == streams and victim["active"] >= 1
    killed = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    errors = [o for o in outcomes.values() if o[0] == "error"]
    assert len(outcomes) == streams and len(errors) == victim["active"]  # the killed replica's streams, only
    assert all(at - killed < 10 and error["code"] == "replica_lost" for _, at, error in errors)
    assert all(o[1] == reference("ROMEO:", LIMIT) for o in outcomes.values() if o[0] == "done")
    done = client(cluster).completions.create(model="model", prompt="the", max_tokens=20, temperature=0)
    assert done.choices[0].text == reference("the", 20)  # the endpoint kept answering
    pids = {r["pid"] for r in before}
    assert wait_until(lambda: len(now := replicas(cluster)) == 2 and victim["pid"] not in {r["pid"] for r in now},
                      seconds=90), "Ray did not replace the killed replica"
    assert {r["pid"] for r in replicas(cluster)} - pids  # a new process


def test_the_builder_maps_replicas_threads_and_autoscale_onto_the_deployment(exported):
    fixed = app({"onnx": str(exported[0]), "replicas": 3, "threads": 2})._bound_deployment
    assert fixed.num_replicas == 3 and fixed.ray_actor_options["num_cpus"] == 2  # Ray reserves the threads' cores
    scaled = app({"onnx": str(exported[0]), "autoscale": "1:4", "slots": 8})._bound_deployment
    config = scaled._deployment_config.autoscaling_config
    assert (config.min_replicas, config.max_replicas, config.target_ongoing_requests) == (1, 4, 8)
    assert scaled.ray_actor_options["num_cpus"] == 1  # one thread per replica unless told


def test_the_builder_checks_its_options_like_the_cli(exported):
    with pytest.raises(GPTError, match="--replicas must be >= 1, got 0"):
        app({"onnx": str(exported[0]), "replicas": 0})
    with pytest.raises(GPTError, match="--replicas and --autoscale exclude each other"):
        app({"onnx": str(exported[0]), "replicas": 2, "autoscale": "1:4"})
    with pytest.raises(GPTError, match=r"unrecognized arguments: --replica 2 \(see `python -m gpt.serve --help`\)"):
        app({"onnx": str(exported[0]), "replica": 2})


def test_replicas_the_local_cluster_cannot_hold_are_one_line_not_a_wait(exported):
    r = subprocess.run([sys.executable, "-m", "gpt.serve", "--ray", "--onnx", str(exported[0]), "--port",
                        str(free_port()), "--threads", "999"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr
    assert "1 replica(s) x 999 thread(s) need 999 CPUs; this machine's Ray cluster has" in errors[0]


def test_sigterm_lets_the_streams_in_flight_finish_then_the_cli_exits_0(exported, reference):
    with server_process(exported[0], "--ray", "--replicas", "1", "--max-tokens-limit", str(LIMIT),
                        seconds=120) as (url, proc):
        done = client(url).completions.create(model="model", prompt="ROMEO:", max_tokens=40, temperature=0)
        assert done.choices[0].text == reference("ROMEO:", 40)
        body = {"model": "model", "prompt": "ROMEO:", "max_tokens": LIMIT, "temperature": 0}
        text, finish_reason = stream_through_sigterm(url, proc, body)
        assert finish_reason == "length" and text == reference("ROMEO:", LIMIT)
        assert proc.wait(timeout=60) == 0
