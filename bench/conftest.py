"""Benchmark session: options, one set of model files per preset, decoders shared across tests, and the
machine description written into the pytest-benchmark JSON.

    make bench                                   # cpu + shakespeare presets, JSON + table + chart in bench/results
    pytest bench --bench-presets cpu,shakespeare,large
    pytest bench --bench-smoke --benchmark-disable  # CI smoke: tiny model, every benchmark runs once

Every backend gets the same weights (random-initialised: speed does not depend on training), the same
thread count (torch.set_num_threads and onnxruntime intra_op threads), torch.inference_mode and the sdpa
attention path (both inside gpt.decoders.torch_decoder), and a warm-up round before timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bench import common

ROOT = Path(__file__).resolve().parents[1]
# Tiny Shakespeare's 65 characters: the vocabulary the presets are sized for.
VOCAB = list("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
ONNX_KINDS = ("fp32", "int8", "int4")
PROMPT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak."


# ---------------------------------------------------------------------------------------------- options


def pytest_addoption(parser):
    g = parser.getgroup("bench", "shakespeare-gpt benchmarks (bench/)")
    g.addoption("--bench-smoke", action="store_true", default=common.env_flag("BENCH_SMOKE"),
                help="tiny model and sizes, one round: checks every benchmark runs (env BENCH_SMOKE=1)")
    g.addoption("--bench-presets", default=os.environ.get("BENCH_PRESETS", ",".join(common.DEFAULT_PRESETS)),
                help="comma-separated presets to benchmark (env BENCH_PRESETS; default cpu,shakespeare; "
                     "large is slow on 2 cores)")
    g.addoption("--bench-threads", type=int, default=int(os.environ.get("BENCH_THREADS", "0")) or None,
                help="threads for every backend (env BENCH_THREADS; default: physical cores)")
    g.addoption("--bench-budget", type=float, default=float(os.environ.get("BENCH_BUDGET_S", "0")) or None,
                help="timed seconds to aim for per benchmark (env BENCH_BUDGET_S; default 2)")
    g.addoption("--bench-full-baseline", action="store_true", default=common.env_flag("BENCH_FULL_BASELINE"),
                help="run the no-cache baseline at batch > 1 for every length, not just the shortest "
                     "(env BENCH_FULL_BASELINE=1; +1-2 minutes)")
    g.addoption("--bench-train-variants",
                default=os.environ.get("BENCH_TRAIN_VARIANTS", ",".join(common.DEFAULT_TRAIN_VARIANTS)),
                help="comma-separated training variants, or 'all' (env BENCH_TRAIN_VARIANTS; "
                     f"from {', '.join(common.TRAIN_VARIANTS)})")


def bench_presets(config) -> list[str]:
    if config.getoption("--bench-smoke"):
        return [common.SMOKE_PRESET]
    from gpt.config import PRESETS

    names = [p.strip() for p in config.getoption("--bench-presets").split(",") if p.strip()]
    unknown = [p for p in names if p not in PRESETS]
    if unknown:
        raise pytest.UsageError(f"--bench-presets: unknown preset(s) {unknown}; choose from {list(PRESETS)}")
    return names


def train_variants(config) -> list[str]:
    raw = config.getoption("--bench-train-variants")
    names = list(common.TRAIN_VARIANTS) if raw.strip() == "all" else [v.strip() for v in raw.split(",") if v.strip()]
    unknown = [v for v in names if v not in common.TRAIN_VARIANTS]
    if unknown:
        raise pytest.UsageError(f"--bench-train-variants: unknown {unknown}; choose from {list(common.TRAIN_VARIANTS)}")
    return names


def thread_count(config) -> int:
    from gpt.decoders.ort_decoder import default_threads

    return config.getoption("--bench-threads") or default_threads()


def pytest_generate_tests(metafunc):
    config = metafunc.config
    s = common.sizes(config.getoption("--bench-smoke"))
    grids = {
        "preset": bench_presets(config),
        "batch": list(s.batches),
        "new_tokens": list(s.new_tokens),
        "train_variant": train_variants(config),
    }
    for name, values in grids.items():
        if name in metafunc.fixturenames:
            prefix = {"batch": "batch", "new_tokens": "new"}.get(name, "")
            metafunc.parametrize(name, values, ids=[f"{prefix}{v}" for v in values])


# ---------------------------------------------------------------------------------------------- session


# The smoke run's budget is torch.compile's cold start (~10-20 s a graph on 2 cores): it keeps one compiled
# decode (batch 1) and one compiled training step (`compile`); the other compile-* variants only change options.
SMOKE_DESELECT = ("compiled-kv", "batch8"), ("compile-",)


def deselected(config, item) -> bool:
    params = getattr(item, "callspec", None)
    params = params.params if params else {}
    if config.getoption("--bench-smoke"):
        return any(all(part in item.name for part in rule) for rule in SMOKE_DESELECT)
    if params.get("backend") == common.BASELINE and params.get("batch", 1) > 1 and "new_tokens" in params:
        return not config.getoption("--bench-full-baseline") and params["new_tokens"] != min(common.NEW_TOKENS)
    return False


def pytest_collection_modifyitems(config, items):
    drop = [it for it in items if deselected(config, it)]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [it for it in items if it not in drop]


@pytest.fixture(scope="session")
def bench_sizes(pytestconfig) -> common.Sizes:
    s = common.sizes(pytestconfig.getoption("--bench-smoke"))
    budget = pytestconfig.getoption("--bench-budget")
    return replace(s, budget_s=budget) if budget and not s.smoke else s


@pytest.fixture(scope="session")
def threads(pytestconfig) -> int:
    """One thread count for every backend, set once for torch (onnxruntime sessions get it explicitly)."""
    import torch

    n = thread_count(pytestconfig)
    torch.set_num_threads(n)
    return n


def model_config(preset: str):
    from gpt.config import ModelConfig, get_preset

    if preset == common.SMOKE_PRESET:
        return ModelConfig(vocab_size=len(VOCAB), block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    cfg = get_preset(preset).model
    cfg.vocab_size = len(VOCAB)
    return cfg


class Artifacts:
    """A random-initialised checkpoint of the preset, its fp32 ONNX export (export.onnx's defaults: one ONNX
    Attention op per layer) and its int8 / int4 quantizations."""

    def __init__(self, preset: str, root: Path):
        import torch

        from export.onnx import add_metadata, export_proto, quantize, serialize
        from gpt.checkpoint import save_checkpoint
        from gpt.fsutil import atomic_write_bytes
        from gpt.model import GPT
        from gpt.tokenizer import CharTokenizer

        self.preset, self.dir = preset, root
        self.config = model_config(preset)
        torch.manual_seed(0)
        model = GPT(self.config).eval()
        tokenizer = CharTokenizer(VOCAB)
        save_checkpoint(root, model, tokenizer, note="random weights for benchmarks")
        self.onnx = {kind: root / ("model.onnx" if kind == "fp32" else f"model.{kind}.onnx") for kind in ONNX_KINDS}
        start = time.perf_counter()
        proto = export_proto(model)
        add_metadata(proto, tokenizer, model, None)
        atomic_write_bytes(self.onnx["fp32"], serialize(proto))
        del proto
        for kind in ONNX_KINDS[1:]:
            quantize(self.onnx["fp32"], self.onnx[kind], kind)
        self.export_s = time.perf_counter() - start
        self.num_params = model.num_params()
        # Bytes a decode step reads: every weight except the position table (one row per token); the token
        # table counts once, as the (tied) vocabulary head reads all of it.
        self.torch_weight_bytes = 4 * (self.num_params - model.wpe.weight.numel())
        self.onnx_weight_bytes = {k: onnx_weight_bytes(p) for k, p in self.onnx.items()}

    def weight_bytes(self, backend: str) -> int:
        if backend.startswith("ort-"):
            return self.onnx_weight_bytes[backend.removeprefix("ort-")]
        return self.torch_weight_bytes


def onnx_weight_bytes(path: Path) -> int:
    """Initializer bytes read by a forward pass: all of them, except tables only ever Gather-ed (one row)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    return sum(numpy_helper.to_array(t).nbytes for t in graph.initializer if consumers.get(t.name) != {"Gather"})


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, threads) -> Callable[[str], Artifacts]:
    built: dict[str, Artifacts] = {}

    def get(preset: str) -> Artifacts:
        if preset not in built:
            built[preset] = Artifacts(preset, tmp_path_factory.mktemp(f"model-{preset}"))
        return built[preset]

    return get


@pytest.fixture(scope="session")
def decoders(artifacts, threads):
    """One decoder per (preset, backend) for the whole session, so compiled graphs and ORT sessions are reused."""
    built: dict[tuple[str, str], object] = {}

    def get(preset: str, backend: str):
        key = (preset, backend)
        if key not in built:
            a = artifacts(preset)
            if backend.startswith("ort-"):
                from gpt.decoders.ort_decoder import OrtDecoder

                built[key] = OrtDecoder.from_file(a.onnx[backend.removeprefix("ort-")], threads=threads)
            else:
                from gpt.decoders.torch_decoder import TorchDecoder

                built[key] = TorchDecoder.from_checkpoint(a.dir, use_cache=backend != "eager-nocache",
                                                          compile=backend == "compiled-kv", threads=threads,
                                                          attention="sdpa")
        return built[key]

    return get


def prompt_ids(n: int) -> list[int]:
    stoi = {c: i for i, c in enumerate(VOCAB)}
    return [stoi[c] for c in (PROMPT * (n // len(PROMPT) + 1))[:n]]


def measure(benchmark, fn: Callable[[], object], rounds: int) -> float | None:
    """Time `fn` for `rounds` rounds (warm-up is the caller's); the median in seconds, None when disabled."""
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
    benchmark.extra_info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return benchmark.stats.stats.median if benchmark.enabled and benchmark.stats else None


def run_timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------ machine info


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "onnxruntime", "onnx", "onnxscript", "numpy", "pytest-benchmark"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


LOAD_AT_START = os.getloadavg()


def pytest_benchmark_update_machine_info(config, machine_info):
    import torch

    machine_info["cpu_model"] = common.cpu_model()
    machine_info["logical_cpus"] = os.cpu_count()
    machine_info["threads"] = thread_count(config)
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["packages"] = package_versions()
    machine_info["python_version"] = sys.version.split()[0]
    machine_info["cuda"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None


def pytest_benchmark_update_json(config, benchmarks, output_json):
    load_end = os.getloadavg()
    threads = thread_count(config)
    output_json["bench"] = {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "smoke": config.getoption("--bench-smoke"),
        "presets": bench_presets(config),
        "threads": threads,
        "loadavg_start": LOAD_AT_START,
        "loadavg_end": load_end,
        # Quiet: the machine was idle before the run (1-minute load < 1.5) and nothing but this run (which
        # keeps `threads` cores busy) was running at its end.
        "quiet": LOAD_AT_START[0] < 1.5 and load_end[0] < threads + 1.0,
        "weights": "random-initialised (speed does not depend on the weights' values)",
    }
