"""Where a decode step's time goes, row by row, beside onnxruntime-genai's loop on the same file and the step's
bandwidth and compute limits.

    python -m bench.step_cost --onnx FILE [FILE ...] [--threads 1] [--rounds 5] [--out bench/results/NAME]
    python -m bench.step_cost --preset cpu shakespeare [--kind fp32 int8]    (random-initialised files of each
                                                                            preset's shape: the gqa export, its int8)

The work is bench.step's at batch 1: a 1-token prompt, then one step per context 2 .. block_size - 1, each step
SlotRunner.decode_sampled at temperature 0.8 (no top-k, no top-p): the run samples too, in the graph's sampling
head (gpt.decode.sampler_graph), whose nodes show among the node rows. Five loops run once per round,
interleaved, after a warm-up round: bench.step's engine loop as it is; the same with the numpy sampler on the
logits instead (the same tokens, as before the head); the first loop with a clock between its parts; that again
on a session with onnxruntime's profiler on; onnxruntime-genai's generator (bench.step's). A figure is µs per
step, the mean over the contexts; the rows are the median round's (the itemised round with the median total; the
profiled round with the median node time), so they add up to its total:

    node: OP            onnxruntime's profiler (profiled loop): the `dur` of the graph's nodes of op type OP a
                        step, each less the profiler's bookkeeping inside it (it writes every input's and output's
                        type and shape into strings between the node's clocks: microseconds a node). The
                        bookkeeping is measured on the same trace, as the mean `dur` of the graph's trivial nodes
                        (shape arithmetic on a few integers, whose kernels do next to nothing; durations are
                        whole µs, truncated, in both, so that mostly cancels); those nodes get no row
    run outside nodes   the run call as Python clocks it in the unprofiled loop, less the node rows: pybind, the
                        binding's checks, the executor between nodes (and the trivial nodes' kernels)
    binding and output  SlotRunner.decode_sampled less its run call: the ids, temperature, draw and attention mask
                        written, the mask re-bound, the tokens returned (a view: the output is bound)
    sampler             the sampler's Python: the step's uniform draw (the rest is the head's nodes)
    loop Python         the rest of the step: lengths += 1, the loop and its clocks
    total               one clock at each step's start to the next's

Beside them: bench.step's step uninstrumented (the clocks' cost is the difference) and with the numpy sampler;
genai's loop (generate_next_token, µs per step); the bandwidth limit, bytes a step reads (weights, from the file's
initializers, + the KV cache at the mean context) ÷ the bandwidth of a single-threaded numpy copy (bytes read +
written per second), at --copy-mib and at the step's own working set (in cache); the compute limit, FLOPs a
step ÷ onnxruntime's MatMul FLOP/s at --threads. Under the table: what the profiler cost (the profiled run
call less the unprofiled one), the bookkeeping taken off each node and the trace's own node sum.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.harness.cli import add_options, command
from bench.harness.genai import genai_missing
from bench.harness.limits import decode_bytes_per_call, decode_step_flops
from bench.harness.machine import cpu_model
from bench.harness.ort_profile import TimedSession, node_times, profiling_session
from bench.harness.rates import MIB, copy_bandwidth, matmul_flops
from bench.harness.results_files import publish, stamp
from bench.reports.step_cost import markdown
from bench.step import TEMPERATURE, EngineLoop, GenaiLoop
from gpt.errors import ArgumentParser, GPTError, at_least, run_cli


class ItemisedLoop:
    """bench.step's engine loop at batch 1 with a clock between its parts (the run call's through TimedSession)."""

    def __init__(self, path: Path, threads: int, session: ort.InferenceSession | None = None):
        from gpt.engine.runner import SlotRunner

        self.runner = SlotRunner(path, 1, threads)
        self.session = TimedSession(session or self.runner.session)
        self.runner.session = self.session  # the runner binds and runs through it
        self.block_size = self.runner.block_size

    def round(self, seed: int) -> dict[str, float]:
        """µs per step of the run call, the binding around it, the sampler, the loop's Python and the whole step:
        the mean over contexts 2 .. block_size - 1."""
        from gpt.decode.sampler import Uniforms, next_draws

        runner, session, clock = self.runner, self.session, time.perf_counter_ns
        draws = [Uniforms(np.random.default_rng(seed), greedy=False)]
        temperature = np.full(1, TEMPERATURE)
        runner.prefill(0, np.array([1], dtype=np.int64), 0)
        tokens, lengths = np.ones(1, dtype=np.int64), np.ones(1, dtype=np.int64)
        marks = []
        for _ in range(2, self.block_size):
            t0 = clock()
            uniform = next_draws(draws)  # as the engine spends its draws
            t1 = clock()
            tokens = runner.decode_sampled(tokens, lengths, 1, temperature, uniform)
            t2 = clock()
            lengths += 1
            marks.append((t0, t1, session.start, session.end, t2))
        end = clock()
        t0, t1, r0, r1, t2 = np.array(marks, dtype=np.int64).T
        after = np.append(t0[1:], end)
        parts = {"run": r1 - r0, "binding": (r0 - t1) + (t2 - r1), "sampler": t1 - t0, "python": after - t2,
                 "total": after - t0}
        return {k: float(v.mean()) / 1e3 for k, v in parts.items()}


@dataclass
class Profiled:
    """A profiled round: its parts; per op type, the µs of its nodes a step less the profiler's bookkeeping
    (`nodes`, never below 0) and as the trace has them (`raw`); the bookkeeping per node (the trivial nodes' mean
    duration) and the nodes a step runs, trivial ones apart."""

    parts: dict[str, float]
    nodes: dict[str, float]
    raw: dict[str, float]
    bookkeeping: float
    count: float
    trivial: float


def profiled_round(path: Path, threads: int, seed: int, folder: Path) -> Profiled:
    """An itemised round on a fresh session with the profiler on, after a warm-up round on it (a session's first
    runs allocate)."""
    session = profiling_session(path, threads, folder)
    loop = ItemisedLoop(path, threads, session)
    loop.round(seed)
    parts = loop.round(seed)
    trace = Path(session.end_profiling())
    try:
        ops, trivial = node_times(trace, loop.block_size - 2)
    finally:
        trace.unlink()
    each = float(trivial.dur.sum() / trivial.nodes.sum()) if trivial.nodes.any() else 0.0
    nodes = {op: max(0.0, float((t.dur - each * t.nodes).mean())) for op, t in ops.items()}
    raw = {op: float(t.dur.mean()) for op, t in ops.items()}
    count = sum(float(t.nodes.mean()) for t in ops.values())
    return Profiled(parts, nodes, raw, each, count + float(trivial.nodes.mean()), float(trivial.nodes.mean()))


def median_round(rounds: list, key: Callable) -> Any:
    """The round whose `key` is the median (the lower one of an even count): its figures add up as measured."""
    return sorted(rounds, key=key)[(len(rounds) - 1) // 2]


def measure(path: Path, threads: int, rounds: int, folder: Path) -> dict:
    """Every loop's rounds on `path`, interleaved; the rows of the median rounds and the other loops' medians."""
    plain, itemised = EngineLoop(path, 1, threads), ItemisedLoop(path, threads)
    numpy_sampler = EngineLoop(path, 1, threads, numpy_sampler=True)
    T = itemised.block_size
    genai = GenaiLoop(path, 1, threads, T)
    steps, before, ours, profiled, theirs = kept = [], [], [], [], []
    for r in range(rounds + 1):  # round 0 warms every loop up (the profiled loop warms up a session of its own)
        figures = (plain.round(r)[2:].mean(), numpy_sampler.round(r)[2:].mean(), itemised.round(r),
                   profiled_round(path, threads, r, folder) if r else None, genai.round(r)[2:].mean())
        if r:
            for into, figure in zip(kept, figures, strict=True):
                into.append(figure)
    mine = median_round(ours, lambda m: m["total"])
    prof = median_round(profiled, lambda p: sum(p.nodes.values()))
    parts = {"run outside nodes": mine["run"] - sum(prof.nodes.values()), "binding and output": mine["binding"],
             "sampler": mine["sampler"], "loop Python": mine["python"], "total": mine["total"]}
    return {"nodes": dict(sorted(prof.nodes.items(), key=lambda kv: -kv[1])), "parts": parts, "nodes_raw": prof.raw,
            "nodes_per_step": prof.count, "trivial_nodes_per_step": prof.trivial, "bookkeeping_us": prof.bookkeeping,
            "profiler_overhead_us": prof.parts["run"] - mine["run"],
            "uninstrumented_us": statistics.median(steps), "numpy_sampler_us": statistics.median(before),
            "genai_us": statistics.median(theirs),
            "contexts": [2, T - 1]}


def limits(path: Path, dram_bytes_s: float, flops_s: float) -> dict:
    """The step's bytes and FLOPs at the mean context, and the fastest the measured rates allow for them."""
    from bench.harness.models import onnx_weight_bytes
    from gpt.decode.backends.ort_session import open_session

    _, m = open_session(path, threads=1)
    context = (2 + m.block_size - 1) / 2
    nbytes = decode_bytes_per_call(onnx_weight_bytes(path), m.n_layer, m.n_embd, 1, context)
    flops = decode_step_flops(m.n_layer, m.n_embd, len(m.vocab), context)
    cache_bytes_s = copy_bandwidth(int(nbytes))
    return {"n_layer": m.n_layer, "n_head": m.n_head, "n_embd": m.n_embd, "block_size": m.block_size,
            "vocab": len(m.vocab), "bytes_per_step": nbytes, "flops_per_step": flops,
            "cache_gb_s": cache_bytes_s / 1e9, "dram_limit_us": 1e6 * nbytes / dram_bytes_s,
            "cache_limit_us": 1e6 * nbytes / cache_bytes_s, "compute_limit_us": 1e6 * flops / flops_s}


def model_files(args, folder: Path) -> list[tuple[str, Path]]:
    """(name, gqa file with genai_config.json beside it) per model: the files given, or each preset's, built."""
    if args.preset:
        from bench.harness.models import Artifacts

        files = []
        for preset in args.preset:
            built = Artifacts(preset, folder / preset)
            files += [(f"{preset} {kind} (random weights)", genai_ready(built, kind)) for kind in args.kind]
        return files
    for path in args.onnx:
        why = f"{path} does not exist" if not path.is_file() else genai_missing(path)
        if why:
            raise GPTError(f"bench.step_cost times onnxruntime-genai beside the engine: {why}")
    return [(str(p), p) for p in args.onnx]


def genai_ready(built, kind: str) -> Path:
    """The preset's `kind` file in a folder of its own with its genai_config.json: the config names one file, and
    the fp32 file's folder already has the fp32 file's."""
    if kind == "fp32":
        return built.onnx["fp32"]
    from export.genai import write_genai_config

    folder = built.dir / kind
    folder.mkdir(exist_ok=True)
    path = folder / "model.onnx"
    shutil.copyfile(built.onnx[kind], path)
    write_genai_config(path, built.config)
    return path


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m bench.step_cost", description=__doc__)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--onnx", type=Path, nargs="+", metavar="FILE",
                       help="gqa files with genai_config.json beside them (python -m export.onnx --genai)")
    which.add_argument("--preset", nargs="+", metavar="NAME",
                       help="presets whose shape to build random-initialised files of (needs torch), e.g. cpu")
    p.add_argument("--kind", nargs="+", choices=("fp32", "int8", "int4"), default=["fp32"],
                   help="with --preset: which of each preset's files, the gqa export or its quantizations "
                        "(default fp32)")
    add_options(p, threads="intra-op threads of every session and of the MatMul rate (default 1)",
                threads_default=1, out="write NAME.json and NAME.md (e.g. bench/results/DATE-MACHINE-step-cost)")
    p.add_argument("--rounds", type=at_least(1), default=5, metavar="N",
                   help="interleaved rounds after a warm-up (default 5)")
    p.add_argument("--copy-mib", type=at_least(1), default=1024, metavar="MIB",
                   help="MiB of the array the DRAM bandwidth is copied with: far past the caches (default 1024)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.onnx and args.kind != ["fp32"]:
        raise GPTError("--kind picks among a preset's files: use it with --preset (--onnx times the files given)")
    models = []
    with tempfile.TemporaryDirectory(prefix="step-cost-") as tmp:
        files = model_files(args, Path(tmp))
        dram, flops = copy_bandwidth(args.copy_mib * MIB), matmul_flops(args.threads)
        for name, path in files:
            print(f"step_cost: {name}, {args.rounds} rounds ...", file=sys.stderr, flush=True)
            figures = measure(path, args.threads, args.rounds, Path(tmp))
            models.append({"name": name, **limits(path, dram, flops), **figures})
    report = stamp({"cpu": cpu_model(), "threads": args.threads, "rounds": args.rounds, "copy_mib": args.copy_mib,
                    "dram_gb_s": dram / 1e9, "matmul_gflop_s": flops / 1e9, "models": models}, command(p, argv))
    publish(report, args.out, markdown(report))
    return 0


if __name__ == "__main__":
    run_cli(main)
