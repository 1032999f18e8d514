"""Opening an onnxruntime CPU session on one of our files: options, threads, and every way the file can be
wrong turned into one line. Imports numpy and onnxruntime only (never torch, never `export`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gpt.decode.onnx_format import EXPORT_HINT, OnnxMeta, parse_metadata
from gpt.decode.sampler_graph import TEMPERATURE, TOKENS, UNIFORM, with_head
from gpt.errors import GPTError


def default_threads() -> int:
    """Physical cores this process may run on (affinity-aware, unlike a count of the machine's cores)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in cpus:
        try:
            topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


_spinning = True  # this process's policy for the sessions it opens: spin_workers


def spin_workers(on: bool) -> None:
    """Whether the sessions this process opens from now on keep their worker threads spinning between ops.

    Spinning is onnxruntime's (and onnxruntime-genai's) default: a decode step is ~70 small ops, and waking
    sleeping workers for each cost 1.7x on `cpu` and 1.2x on `shakespeare` at batch 1 (2-core AMD EPYC, quiet).
    Beside other work on the same cores (an HTTP server's event loop, its clients, a proxy) the spinning workers
    take the CPU that work needs: gpt.serve turns it off unless told `--spin` (docs/serving.md).
    """
    global _spinning
    _spinning = on


def session_options(threads: int | None = None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    if not _spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: no warnings about unused initializers on stderr
    return so


def open_session(path: Path, threads: int | None = None,
                 sampler: bool = False) -> tuple[ort.InferenceSession, OnnxMeta]:
    """An onnxruntime CPU session and the file's metadata, or a one-line `GPTError`; with `sampler`, the graph
    ends in the sampling head of `gpt.decode.sampler_graph` (the file itself is not changed)."""
    path = Path(path)
    if not path.is_file():
        raise GPTError(f"ONNX file {path} does not exist; {EXPORT_HINT}")
    if path.stat().st_size == 0:
        raise GPTError(f"ONNX file {path} is empty; {EXPORT_HINT}")
    if sampler:
        try:
            session = _session(with_head(path.read_bytes()), threads)
            return session, parse_metadata(session.get_modelmeta().custom_metadata_map, path)
        except Exception:  # not our graph: opened as it is, the checks below and the decoders' say what is wrong
            pass
    try:
        session = _session(str(path), threads)
    except Exception as e:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, InvalidGraph, ...)
        raise GPTError(load_failure(path, " ".join(str(e).split()))) from None
    return session, parse_metadata(session.get_modelmeta().custom_metadata_map, path)


def _session(model: str | bytes, threads: int | None) -> ort.InferenceSession:
    return ort.InferenceSession(model, sess_options=session_options(threads), providers=["CPUExecutionProvider"])


def load_failure(path: Path, reason: str) -> str:
    if "GroupQueryAttention" in reason:
        return (f"{path} uses com.microsoft.GroupQueryAttention (the gqa layout), which this onnxruntime "
                f"({ort.__version__}) cannot run; re-export it with `python -m export.onnx --attention onnx`")
    hint = ""
    if version(ort.__version__) < (1, 23):
        hint = (f"; opset-23 exports need onnxruntime >= 1.23 (installed: {ort.__version__}): upgrade it, "
                "or re-export with `python -m export.onnx --opset 18 --attention sdpa`")
    short = reason if len(reason) <= 300 else reason[:300] + " ..."
    return f"{path} is not a loadable ONNX model (truncated or not ONNX?): {short}{hint}"


def version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def samples(session: ort.InferenceSession) -> bool:
    """Whether the session ends in the sampling head (`open_session(..., sampler=True)` on one of our files)."""
    return session.get_outputs()[-1].name == TOKENS


def check_signature(session: ort.InferenceSession, meta: OnnxMeta, path: Path, inputs: list[str],
                    outputs: list[str]) -> None:
    """The graph's inputs/outputs are the ones its metadata promises (and the sampling head's, where the session
    has it: `open_session(..., sampler=True)`)."""
    got_in = [i.name for i in session.get_inputs()]
    got_out = [o.name for o in session.get_outputs()]
    if samples(session):
        inputs, outputs = [*inputs, TEMPERATURE, UNIFORM], [*outputs, TOKENS]
    if got_in != inputs or got_out != outputs:
        raise GPTError(f"{path}: graph inputs/outputs do not match its metadata (layout {meta.layout}, "
                       f"{len(got_in)} inputs, {len(got_out)} outputs for n_layer {meta.n_layer}); {EXPORT_HINT}")
    vocab_dim = session.get_outputs()[0].shape[-1]
    if isinstance(vocab_dim, int) and vocab_dim != len(meta.vocab):
        raise GPTError(f"{path}: logits have {vocab_dim} entries but the vocabulary {len(meta.vocab)}")


def check_ids(ids, vocab_size: int, block_size: int, past: int = 0) -> np.ndarray:
    """Token ids as a [batch, seq] int64 array within the vocabulary and block_size, or a `GPTError`."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.ndim != 2 or ids.shape[1] < 1:
        raise GPTError(f"token ids must be a [batch, seq] array with seq >= 1, got shape {ids.shape}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise GPTError(f"token ids must be in [0, {vocab_size}), got {ids.min()}..{ids.max()}")
    if past + ids.shape[1] > block_size:
        raise GPTError(f"sequence of {past + ids.shape[1]} tokens exceeds block_size {block_size}")
    return ids
