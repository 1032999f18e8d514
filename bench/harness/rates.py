"""The machine's practical rates, measured the simple way for a step's limits: the bandwidth of a numpy copy and
onnxruntime's MatMul GFLOP/s at a given thread count. Torch-free (numpy, onnx, onnxruntime), so a command that
decodes without torch can quote its limits from figures of its own run. The suite's hardware benchmarks
(suite/test_hardware_bench.py) measure the same things with torch across sizes."""

from __future__ import annotations

import time

import numpy as np

MIB = 1 << 20


def best_seconds(fn, repeats: int) -> float:
    """The fastest of `repeats` calls of `fn` after one untimed: a limit is what the machine can do, not its mean."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def copy_bandwidth(nbytes: int, min_seconds: float = 0.2) -> float:
    """Bytes moved per second (read + written) by np.copyto of a float32 array of `nbytes`, single-threaded: at a
    large size the machine's practical DRAM bandwidth, at a step's working set the rate its caches give."""
    src = np.ones(max(1, nbytes // 4), dtype=np.float32)
    dst = np.zeros_like(src)  # both touched: no page faults in the timed copies
    one = best_seconds(lambda: np.copyto(dst, src), 1)
    repeats = max(3, min(200, int(min_seconds / max(one, 1e-9))))
    return 2 * src.nbytes / best_seconds(lambda: np.copyto(dst, src), repeats)


def matmul_flops(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of onnxruntime's MatMul (MLAS sgemm) on two [n, n] float32 inputs with `threads` intra-op threads,
    the session options our decoder uses: the compute a step's matmuls could reach at best."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from gpt.decode.backends.ort_session import session_options

    spec = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in ("a", "b", "y")]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(),
                                   sess_options=session_options(threads), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    return 2 * n**3 / best_seconds(lambda: session.run(None, feeds), repeats)
