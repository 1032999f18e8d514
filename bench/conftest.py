"""Benchmark session of the suite in bench/suite/: options, one set of model files per preset, decoders shared
across tests, where a run writes its results, and the machine description written into the pytest-benchmark JSON.
It sits at bench/, where `pytest bench` reads it first, so that its options are known when the command line is.

    make bench                                   # cpu + shakespeare presets, JSON + table + chart in bench/results
    pytest bench --bench-presets cpu,shakespeare,large
    pytest bench --bench-smoke --benchmark-disable  # CI smoke: tiny model, every benchmark runs once

Every backend gets the same weights (random-initialised: speed does not depend on training), the same
thread count (torch.set_num_threads and onnxruntime intra_op threads), torch.inference_mode and the sdpa
attention path (both inside gpt.decode.backends.torch_decoder), and a warm-up round before timing.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bench.harness import machine, plan
from bench.harness.models import Artifacts, open_backend
from bench.harness.results_files import RESULTS, command_line, stamp

# ---------------------------------------------------------------------------------------------- options


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def pytest_addoption(parser):
    g = parser.getgroup("bench", "shakespeare-gpt benchmarks (bench/)")
    g.addoption("--bench-smoke", action="store_true", default=env_flag("BENCH_SMOKE"),
                help="tiny model and sizes, one round: checks every benchmark runs (env BENCH_SMOKE=1)")
    g.addoption("--bench-presets", default=os.environ.get("BENCH_PRESETS", ",".join(plan.DEFAULT_PRESETS)),
                help="comma-separated presets to benchmark (env BENCH_PRESETS; default cpu,shakespeare; "
                     "large is slow on 2 cores)")
    g.addoption("--bench-threads", type=int, default=int(os.environ.get("BENCH_THREADS", "0")) or None,
                help="threads for every backend (env BENCH_THREADS; default: physical cores)")
    g.addoption("--bench-budget", type=float, default=float(os.environ.get("BENCH_BUDGET_S", "0")) or None,
                help="timed seconds to aim for per benchmark (env BENCH_BUDGET_S; default 2)")
    g.addoption("--bench-full-baseline", action="store_true", default=env_flag("BENCH_FULL_BASELINE"),
                help="run the no-cache baseline at batch > 1 for every length, not just the shortest "
                     "(env BENCH_FULL_BASELINE=1; +1-2 minutes)")
    g.addoption("--bench-train-variants",
                default=os.environ.get("BENCH_TRAIN_VARIANTS", ",".join(plan.DEFAULT_TRAIN_VARIANTS)),
                help="comma-separated training variants, or 'all' (env BENCH_TRAIN_VARIANTS; "
                     f"from {', '.join(plan.TRAIN_VARIANTS)})")


def bench_presets(config) -> list[str]:
    if config.getoption("--bench-smoke"):
        return [plan.SMOKE_PRESET]
    from gpt.config import PRESETS

    names = [p.strip() for p in config.getoption("--bench-presets").split(",") if p.strip()]
    unknown = [p for p in names if p not in PRESETS]
    if unknown:
        raise pytest.UsageError(f"--bench-presets: unknown preset(s) {unknown}; choose from {list(PRESETS)}")
    return names


def train_variants(config) -> list[str]:
    raw = config.getoption("--bench-train-variants")
    names = list(plan.TRAIN_VARIANTS) if raw.strip() == "all" else [v.strip() for v in raw.split(",") if v.strip()]
    unknown = [v for v in names if v not in plan.TRAIN_VARIANTS]
    if unknown:
        raise pytest.UsageError(f"--bench-train-variants: unknown {unknown}; choose from {list(plan.TRAIN_VARIANTS)}")
    return names


def thread_count(config) -> int:
    from gpt.decode.backends.ort_session import default_threads

    return config.getoption("--bench-threads") or default_threads()


def pytest_generate_tests(metafunc):
    config = metafunc.config
    s = plan.sizes(config.getoption("--bench-smoke"))
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
    backend = params.get("backend")
    if backend in plan.BATCH1_ONLY and params.get("batch", 1) > 1:
        return True
    if backend == "genai-loop" and "new_tokens" not in params:
        return True  # its loop has no prefill-only call
    if config.getoption("--bench-smoke"):
        return any(all(part in item.name for part in rule) for rule in SMOKE_DESELECT)
    if backend == plan.BASELINE and params.get("batch", 1) > 1 and "new_tokens" in params:
        return not config.getoption("--bench-full-baseline") and params["new_tokens"] != min(plan.NEW_TOKENS)
    return False


def pytest_collection_modifyitems(config, items):
    drop = [it for it in items if deselected(config, it)]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [it for it in items if it not in drop]


@pytest.fixture(scope="session")
def bench_sizes(pytestconfig) -> plan.Sizes:
    s = plan.sizes(pytestconfig.getoption("--bench-smoke"))
    budget = pytestconfig.getoption("--bench-budget")
    return replace(s, budget_s=budget) if budget and not s.smoke else s


@pytest.fixture(scope="session")
def threads(pytestconfig) -> int:
    """One thread count for every backend, set once for torch (onnxruntime sessions get it explicitly)."""
    import torch

    n = thread_count(pytestconfig)
    torch.set_num_threads(n)
    return n


@pytest.fixture
def out_path(pytestconfig, tmp_path) -> Callable[[str], Path]:
    """Where a run writes NAME.{md,json,png}: bench/results/DATE-NAME (`make bench`), or tmp_path (the smoke run:
    the report and the picture are made all the same)."""
    if pytestconfig.getoption("--bench-smoke"):
        return lambda name: tmp_path / name
    return lambda name: RESULTS / f"{datetime.date.today()}-{name}"


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
        if (preset, backend) not in built:
            built[preset, backend] = open_backend(artifacts(preset), backend, threads)
        return built[preset, backend]

    return get


# ------------------------------------------------------------------------------------------ machine info


LOAD_AT_START = os.getloadavg()


def pytest_benchmark_update_machine_info(config, machine_info):
    import torch

    machine_info["cpu_model"] = machine.cpu_model()
    machine_info["logical_cpus"] = os.cpu_count()
    machine_info["threads"] = thread_count(config)
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["packages"] = machine.package_versions()
    machine_info["python_version"] = sys.version.split()[0]
    machine_info["cuda"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None


def pytest_benchmark_update_json(config, benchmarks, output_json):
    load_end = os.getloadavg()
    threads = thread_count(config)
    # What the docs show beside every figure (bench/harness/results_files.py); `make bench` passes its own spelling.
    command = os.environ.get("BENCH_COMMAND") or command_line("python -m pytest", list(config.invocation_params.args))
    gpu = output_json.get("machine_info", {}).get("cuda")
    host = machine.this_machine()
    output_json.update(stamp({}, command, f"{gpu} ({host} host)" if gpu else host))
    output_json["bench"] = {
        "commit": machine.git("rev-parse", "HEAD"),
        "dirty": bool(machine.git("status", "--porcelain", "--untracked-files=no")),
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
