"""The speculative-decoding benchmark (bench/speculative.py): batch 1 plain vs speculative (greedy, T = 0.8)
beside onnxruntime-genai's loop and its n-gram speculation, then the engine at 1, 4, 16 streams with and without.
Drafts only pay on a trained model (random weights accept nothing), so `make bench` runs it on the demo model,
`out/model.onnx` (skipped, saying why, when `make demo` has not made one), into
bench/results/DATE-speculative-cpu.{md,json}; the smoke run checks the command on the tiny random file."""

from __future__ import annotations

import json

import pytest

from bench import speculative
from bench.harness import plan
from bench.harness.machine import ROOT


def test_speculative(artifacts, threads, pytestconfig, out_path, capsys):
    if pytestconfig.getoption("--bench-smoke"):
        onnx, out = artifacts(plan.SMOKE_PRESET).onnx["fp32"], out_path("speculative")
        args = ["--tokens", "20", "--rounds", "1", "--prompts", "1", "--streams", "1", "--engine-tokens", "8"]
    else:
        onnx = ROOT / "out" / "model.onnx"
        if not onnx.is_file():
            pytest.skip(f"speculation needs a trained model and {onnx} does not exist: run `make demo` first")
        out, args = out_path("speculative-cpu"), []
    assert speculative.main(["--onnx", str(onnx), "--threads", str(threads), "--out", str(out), *args]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    configs = {(r["section"], r["config"]) for r in report["rows"]}
    assert {("batch 1", "plain"), ("batch 1", "speculative ngram"), ("batch 1", "speculative distilled")} <= configs
    assert (f"engine, speculating with {speculative.ENGINE_DRAFTER}", "1 streams") in configs
    assert report["machine"] and report["command"]
    assert "speculative ngram" in capsys.readouterr().out
