"""The serving benchmark (bench/serving.py) on each preset's random-weight gqa file: C = 1, 4, 16, 64 streaming
clients through `python -m gpt.serve`, beside `gpt.sample` batch 1, our engine and onnxruntime-genai's Engine
in-process. `make bench` writes bench/results/DATE-serving-PRESET.{md,json,png}; the smoke run uses C = 1, 4
and 8 new tokens and checks only that every request completes."""

from __future__ import annotations

import datetime
import json

import pytest

from bench import cluster, serving


def test_serving(preset, artifacts, threads, pytestconfig, capsys):
    smoke = pytestconfig.getoption("--bench-smoke")
    a = artifacts(preset)
    out = None if smoke else serving.ROOT / "bench" / "results" / f"{datetime.date.today()}-serving-{preset}"
    args = ["--onnx", str(a.onnx["fp32"]), "--threads", str(threads)]
    args += ["--concurrency", "1,4", "--max-tokens", "8", "--requests-per-client", "1"] if smoke else [
        "--out", str(out)]
    if not a.onnx["fp32"].with_name("genai_config.json").is_file():
        pytest.fail("the benchmark file has no genai_config.json")
    assert serving.main(args) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| server")]
    assert rows and all(" / 0 |" in line for line in rows), table  # every request completed, none failed
    if out is not None:
        report = json.loads(out.with_suffix(".json").read_text())
        assert all(r["failed"] == 0 for r in report["rows"])


def test_cluster(preset, artifacts, pytestconfig, capsys):
    """bench/cluster.py: gpt.serve beside Ray Serve with 1 and 2 replicas (`make bench`:
    bench/results/DATE-cluster-PRESET.{md,json}); the smoke run: 2 streams, 8 new tokens, 5 probes."""
    pytest.importorskip("ray")
    smoke = pytestconfig.getoption("--bench-smoke")
    a = artifacts(preset)
    out = None if smoke else serving.ROOT / "bench" / "results" / f"{datetime.date.today()}-cluster-{preset}"
    args = ["--onnx", str(a.onnx["fp32"])]
    args += ["--streams", "2", "--max-tokens", "8", "--requests-per-client", "1", "--probes", "5"] if smoke else [
        "--out", str(out)]
    assert cluster.main(args) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| server")]
    assert len(rows) == 4 and all(" / 0 |" in line for line in rows), table  # every request completed
