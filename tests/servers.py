"""Starting and driving a server in a test: 127.0.0.1 only, a free port, bounded waits, and every process a test
starts stopped by it, also when the test fails (tests/test_serve.py, tests/test_ray_serve.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from conftest import ROOT

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}: {proc.stderr.read()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"{url} did not become healthy in {seconds} s")


@contextlib.contextmanager
def server_process(onnx: Path, *args: str, port: int | None = None, seconds: float = 60
                   ) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python -m gpt.serve` as a user starts it, in a process group of its own (a --ray server's local cluster
    included): SIGTERM, then SIGKILL to the whole group, however the test ends."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gpt.serve", "--onnx", str(onnx), "--host", HOST, "--port",
                             str(port), "--threads", "1", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "GPT_API_KEY": ""},
                            start_new_session=True)
    url = f"http://{HOST}:{port}"
    try:
        wait_healthy(url, proc, seconds)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group (none after a clean exit)
        proc.wait(timeout=15)


def sse(response: httpx.Response) -> Iterator[dict]:
    """The JSON events of a streamed response, up to `data: [DONE]`."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            if line == "data: [DONE]":
                return
            yield json.loads(line[6:])


def stream_through_sigterm(url: str, proc: subprocess.Popen, body: dict) -> tuple[str, str | None]:
    """Stream `body`, send the server SIGTERM once the first text has come, read the stream to its end:
    (the whole text, the last finish_reason)."""
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=60) as s:
        events = sse(s)
        text = next(events)["choices"][0]["text"]
        proc.send_signal(signal.SIGTERM)
        chunks = list(events)
    return text + "".join(e["choices"][0]["text"] for e in chunks), chunks[-1]["choices"][0]["finish_reason"]
