"""The serving benchmark (bench/serving.py) on each preset's random-weight gqa file: C = 1, 4, 16, 64 streaming
clients through `python -m gpt.serve`, beside `gpt.sample` batch 1, our engine and onnxruntime-genai's Engine
in-process. `make bench` writes bench/results/DATE-serving-PRESET.{md,json,png}; the smoke run uses C = 1, 4
and 8 new tokens and checks only that every request completes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from bench import serving
from bench.harness import plan
from bench.harness.machine import ROOT
from bench.harness.results_files import command_line, stamp


def test_serving(preset, artifacts, threads, pytestconfig, capsys, out_path):
    smoke = pytestconfig.getoption("--bench-smoke")
    a = artifacts(preset)
    out = out_path(f"serving-{preset}")
    args = ["--onnx", str(a.onnx["fp32"]), "--threads", str(threads), "--out", str(out)]
    args += ["--concurrency", "1,4", "--max-tokens", "8", "--requests-per-client", "1"] if smoke else []
    if not a.onnx["fp32"].with_name("genai_config.json").is_file():
        pytest.fail("the benchmark file has no genai_config.json")
    assert serving.main(args) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| server")]
    assert rows and all(" / 0 |" in line for line in rows), table  # every request completed, none failed
    report = json.loads(out.with_suffix(".json").read_text())
    assert all(r["failed"] == 0 for r in report["rows"]) and out.with_suffix(".png").stat().st_size > 0
    if not smoke:  # the machine, date and command the docs show beside its figures (bench/harness/results_files.py)
        command = os.environ.get("BENCH_COMMAND", "make bench")
        command += f" (bench/suite/test_serving_bench.py: {command_line('python -m bench.serving', args)})"
        out.with_suffix(".json").write_text(json.dumps(stamp(report, command), indent=1))


def test_serving_a_file_without_genai_config_skips_that_row_says_why_first_and_writes_the_rest(
        artifacts, threads, pytestconfig, tmp_path):
    """`python -m bench.serving --onnx out/model.onnx` after `make demo` (an export without --genai): the line
    saying why onnxruntime-genai's rows are skipped comes before any measurement, every other row is written,
    exit 0 (it ran the server rows, then died in genai's loader and wrote nothing)."""
    if not pytestconfig.getoption("--bench-smoke"):
        pytest.skip("a check of the command, not a benchmark: the smoke run has it")
    onnx = tmp_path / "model.onnx"
    shutil.copy(artifacts(plan.SMOKE_PRESET).onnx["fp32"], onnx)
    out = tmp_path / "report"
    r = subprocess.run([sys.executable, "-m", "bench.serving", "--onnx", str(onnx), "--threads", str(threads),
                        "--concurrency", "1", "--max-tokens", "8", "--requests-per-client", "1", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    why = f"{tmp_path / 'genai_config.json'} is missing (export with `python -m export.onnx --ckpt CKPT --genai`"
    skip_line, *after = [line for line in r.stderr.splitlines() if "skipping" in line or "batch 1:" in line]
    assert skip_line.startswith("bench.serving: skipping onnxruntime-genai Engine: " + why), r.stderr
    assert after and after[0].startswith("gpt.sample batch 1:")  # said before the first measurement
    report = json.loads(out.with_suffix(".json").read_text())
    assert [row["server"] for row in report["rows"]] == ["gpt.serve", "gpt.engine in-process"]
    assert report["skipped"] == {"onnxruntime-genai Engine": why + " to write it)"}
    assert out.with_suffix(".md").read_text() in r.stdout and f"not run: {why}" in r.stdout


def test_cluster(preset, artifacts, pytestconfig, out_path):
    """`python -m bench.cluster` (the command, as users type it): gpt.serve beside Ray Serve with 1 and 2 replicas
    (`make bench`: bench/results/DATE-cluster-PRESET.{md,json,png}); the smoke run: 2 streams, 8 new tokens,
    5 probes."""
    pytest.importorskip("ray")
    smoke = pytestconfig.getoption("--bench-smoke")
    a = artifacts(preset)
    out = out_path(f"cluster-{preset}")
    args = ["--onnx", str(a.onnx["fp32"]), "--out", str(out)]
    args += ["--streams", "2", "--max-tokens", "8", "--requests-per-client", "1", "--probes", "5"] if smoke else []
    r = subprocess.run([sys.executable, "-m", "bench.cluster", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and not line.startswith("| server")]
    assert len(rows) == 4 and all(" / 0 |" in line for line in rows), r.stdout  # every request completed
    assert out.with_suffix(".md").read_text() in r.stdout and out.with_suffix(".png").stat().st_size > 0
