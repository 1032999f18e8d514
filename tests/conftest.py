"""Shared fixtures: one tiny checkpoint per session, overfit on a periodic text so its logits are
decisive (greedy text then cannot flip on 1e-6 noise between backends), and its ONNX exports (both layouts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PERIODIC_TEXT = "the quick brown fox jumps over the lazy dog; ROMEO: wherefore art thou?\n" * 300
TINY = ["--n_layer", "2", "--n_head", "2", "--n_embd", "32", "--block_size", "32", "--dropout", "0",
        "--batch_size", "16", "--learning_rate", "3e-3", "--min_lr", "3e-4", "--warmup_iters", "10",
        "--eval_iters", "5", "--no-compile", "--no-progress", "--dtype", "float32",  # no probe: same dtype every run
        "--lr_schedule", "cosine"]  # the fixtures' models stay what they were when a preset's recipe changes


ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models: faster on one thread, and steady on a busy machine


def read_log(out: Path) -> list[dict]:
    """A training run's log.jsonl rows."""
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture
def one_torch_thread():
    """ONE_THREAD for a run in this process."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_module(module: str, *args: str, env: dict | None = None, timeout: float = 300,
               python: str = sys.executable) -> subprocess.CompletedProcess:
    """Run `python -m module args` the way a user does; returns the completed process (never raises)."""
    return subprocess.run([python, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def wait_until(condition, seconds: float = 10.0) -> bool:
    """Poll `condition` until it holds (True) or `seconds` pass (False): every wait in a test is bounded."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.002)
    return False


@pytest.fixture(scope="session")
def periodic_text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "periodic.txt"
    path.write_text(PERIODIC_TEXT)
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, periodic_text_file) -> Path:
    """A 2-layer, 32-wide model trained for 300 steps on the periodic text (a few seconds)."""
    from gpt.train.loop import main

    out = tmp_path_factory.mktemp("ckpt")
    main(["--data", str(periodic_text_file), "--out-dir", str(out), *TINY, "--max_iters", "300",
          "--eval_interval", "150"])
    return out


@pytest.fixture(scope="session")
def shakespeare_slice(tmp_path_factory) -> Path:
    """The first 100,000 characters of Tiny Shakespeare (prepared by `make data`): real text, where logits
    are not near-certain as on the periodic text."""
    source = ROOT / "data" / "tinyshakespeare" / "input.txt"
    if not source.is_file():
        pytest.fail(f"{source} is missing: run `make data` (or `python -m gpt.data`) first")
    path = tmp_path_factory.mktemp("data") / "shakespeare-100k.txt"
    path.write_text(source.read_text()[:100_000])
    return path


@pytest.fixture(scope="session")
def shakespeare_ckpt(tmp_path_factory, shakespeare_slice) -> Path:
    """The tiny model trained 150 steps on real text with Muon (a few seconds)."""
    from gpt.train.loop import main

    out = tmp_path_factory.mktemp("ckpt-shakespeare")
    main(["--data", str(shakespeare_slice), "--out-dir", str(out), *TINY, "--max_iters", "150",
          "--eval_interval", "75", "--optimizer", "muon", "--muon_lr", "1e-2"])
    return out


@pytest.fixture(scope="session")
def exported(tiny_ckpt, periodic_text_file, tmp_path_factory):
    """(gqa fp32 path, int8 path, CLI stdout) of `export.onnx --quantize int8 --quantize int4 --genai --eval`."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    r = run_module("export.onnx", "--ckpt", str(tiny_ckpt), "--out", str(out), "--quantize", "int8",
                   "--quantize", "int4", "--genai", "--eval", "--data", str(periodic_text_file), "--threads", "1")
    assert r.returncode == 0, r.stderr
    return out, out.with_name("model.int8.onnx"), r.stdout


@pytest.fixture(scope="session")
def exported_std(tiny_ckpt, tmp_path_factory):
    """The portable layout: `export.onnx --attention onnx` (standard opset-23 Attention, concat cache)."""
    out = tmp_path_factory.mktemp("onnx-std") / "std.onnx"
    r = run_module("export.onnx", "--ckpt", str(tiny_ckpt), "--out", str(out), "--attention", "onnx",
                   "--threads", "1")
    assert r.returncode == 0, r.stderr
    return out


# ---- headless Chromium, for the web page's tests (test_web.py, test_explorer.py) -------------------------------

@pytest.fixture(scope="module")
def browser():
    from bench.harness.browser import browser_missing, chromium_driver

    why = browser_missing()
    if why:
        pytest.skip(f"{why} to run the browser tests")
    driver = chromium_driver()
    yield driver
    driver.quit()
