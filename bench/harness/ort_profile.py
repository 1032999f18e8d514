"""onnxruntime's own view of a run, for itemising a step: a session with its profiler on, a wrapper that clocks the
run call from Python, the profiler's trace summed per op type and run. Torch-free.

The trace (SessionOptions.enable_profiling, written by end_profiling) is Chrome's format: one `model_run` event
(cat Session) per run call and one event per node executed (cat Node, `args.op_name`, `args.input_type_shape`,
`args.output_type_shape`), with `ts` and `dur` in whole microseconds (truncated). A node's `dur` is not its
kernel alone: onnxruntime's SequentialExecutor starts the node's clock, writes the type and shape of every input
and output into strings, runs the kernel and builds the event's arguments before it reads the clock again. That
bookkeeping is microseconds a node, more than a small kernel: the durations of the graph's trivial nodes
(shape arithmetic on a few integers) are little else, so `node_times` keeps them apart, as the measure of it.
"""

from __future__ import annotations

import json
import time
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gpt.decode.backends.ort_session import session_options
from gpt.decode.sampler_graph import with_head


def profiling_session(path: Path, threads: int, folder: Path) -> ort.InferenceSession:
    """A session of `path` as the engine opens it (its options, the sampling head) with the profiler on, its trace to
    be written in `folder`."""
    so = session_options(threads)
    so.enable_profiling = True
    so.profile_file_prefix = str(folder / "ort-profile")
    return ort.InferenceSession(with_head(path.read_bytes()), sess_options=so, providers=["CPUExecutionProvider"])


class TimedSession:
    """A session whose `run_with_iobinding` keeps the perf_counter_ns at its start and end, for the runner that
    calls it: the run call apart from what the runner does around it. Costs a Python call and two clocks a run."""

    def __init__(self, session: ort.InferenceSession):
        self.session = session
        self.start = self.end = 0

    def io_binding(self) -> ort.IOBinding:
        return self.session.io_binding()

    def run_with_iobinding(self, io: ort.IOBinding) -> None:
        self.start = time.perf_counter_ns()
        self.session.run_with_iobinding(io)
        self.end = time.perf_counter_ns()


# A node whose every output holds at most this many elements does next to nothing (the graph's shape arithmetic:
# Shape, Squeeze, Range, Cast, the position's Add and Sub, the mask's ReduceSum): its `dur` is the profiler's
# bookkeeping.
TRIVIAL_ELEMENTS = 8


@dataclass
class OpTimes:
    """One op type's nodes in each of a trace's runs: the sum of their durations (µs) and their count."""

    dur: np.ndarray
    nodes: np.ndarray


def elements(type_shapes: list[dict]) -> list[int]:
    """Elements of each tensor of a trace's `output_type_shape` ([{"float": [1, 2]}, ...])."""
    return [int(np.prod(shape)) for entry in type_shapes for shape in entry.values()]


def node_times(trace: Path, runs: int) -> tuple[dict[str, OpTimes], OpTimes]:
    """The nodes of each of the trace's last `runs` run calls, by op type, and apart from them the trivial nodes
    (TRIVIAL_ELEMENTS), whose mean duration is what the profiler adds to every node's."""
    events = json.loads(Path(trace).read_text())
    calls = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    if len(calls) < runs:
        raise ValueError(f"{trace}: {len(calls)} run calls, expected at least {runs}")
    starts = [start for start, _ in calls]
    ops: dict[str, OpTimes] = {}
    trivial = OpTimes(np.zeros(runs), np.zeros(runs))
    for e in events:
        args = e.get("args", {})
        if e.get("cat") != "Node" or "op_name" not in args:
            continue
        i = bisect_right(starts, e["ts"]) - 1
        if i < 0 or e["ts"] + e["dur"] > calls[i][1]:
            continue  # a node of an earlier run
        outputs = elements(args.get("output_type_shape", []))
        if outputs and max(outputs) <= TRIVIAL_ELEMENTS:
            op = trivial
        else:
            op = ops.setdefault(args["op_name"], OpTimes(np.zeros(runs), np.zeros(runs)))
        op.dur[i] += e["dur"]
        op.nodes[i] += 1
    return ops, trivial
