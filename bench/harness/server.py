"""The serving benchmarks' common ground (bench.serving, bench.cluster): `python -m gpt.serve` started in a process
of its own, and the work every client sends it: prompts of one length from the validation split, so that prompt
+ max_tokens fits block_size (onnxruntime-genai slides no window), sampled at SERVING_TEMPERATURE."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench.harness.load import LoadResult, run_load
from bench.harness.machine import ROOT
from bench.harness.plan import SERVING_TEMPERATURE
from gpt.data import split
from gpt.decode.backends.ort_session import open_session
from gpt.decode.onnx_format import OnnxMeta
from gpt.errors import GPTError


def val_prompts(path: Path, vocab: list[str], length: int, count: int, seed: int = 0) -> list[str]:
    """`count` windows of `length` characters from the validation split of the text at `path` (gpt.data.split's
    last 10 %), each made only of the model's characters."""
    if not path.is_file():
        raise GPTError(f"{path} is missing: run `python -m gpt.data` first")
    _, val = split(path.read_text())
    known = set(vocab)
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        start = int(rng.integers(0, len(val) - length))
        window = val[start:start + length]
        if set(window) <= known:
            out.append(window)
    return out


@dataclass(frozen=True)
class Workload:
    """The requests of a serving run: `prompts` of `prompt_len` characters, each `body` + its prompt."""

    meta: OnnxMeta
    prompt_len: int
    prompts: list[str]
    body: dict

    def load(self, url: str, clients: int, per_client: int) -> LoadResult:
        """`clients` streaming clients, each sending `per_client` requests in turn (bench.harness.load)."""
        return asyncio.run(run_load(url, self.prompts, clients, per_client, self.body))

    def warm_up(self, url: str) -> None:
        self.load(url, 2, 1)


def workload(onnx: Path, text: Path, max_tokens: int, count: int = 256) -> Workload:
    """`count` prompts from `text` that leave room for `max_tokens` new tokens in the file's block_size."""
    _, meta = open_session(onnx, threads=1)
    prompt_len = meta.block_size - max_tokens
    if prompt_len < 1:
        raise GPTError(f"--max-tokens {max_tokens} leaves no room for a prompt in block_size {meta.block_size}")
    body = {"model": onnx.stem, "max_tokens": max_tokens, "temperature": SERVING_TEMPERATURE}
    return Workload(meta, prompt_len, val_prompts(text, meta.vocab, prompt_len, count), body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(onnx: Path, slots: int, threads: int, *extra: str, replicas: int = 0, seconds: float = 120
           ) -> Iterator[str]:
    """`python -m gpt.serve` in a process group of its own, up when /health answers (and, with `--ray`, lists
    `replicas` replicas); SIGTERM, then SIGKILL to the group (a --ray server's local cluster included)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gpt.serve", "--onnx", str(onnx), "--port", str(port),
                             "--slots", str(slots), "--threads", str(threads), "--max-queue", "1024",
                             "--log-level", "warning", *extra], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + seconds
        while True:
            if proc.poll() is not None:
                raise GPTError(f"gpt.serve exited: {proc.stderr.read()[-300:]}")
            if time.monotonic() > end:
                raise GPTError(f"gpt.serve {' '.join(extra)} was not ready in {seconds:.0f} s")
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"{url}/health", timeout=1)
                if health.status_code == 200 and len(health.json().get("replicas", [])) == replicas:
                    break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
