"""onnxruntime decoder: one exported graph (`python -m export.onnx`) serves prefill and decode.

Imports numpy and onnxruntime only (never torch, never `export`), so the base install samples. The file is
self-describing: vocabulary and model shape come from its `metadata_props`. Each call's `present.*` outputs
are fed back as the next call's `past_key_values.*` through plain `session.run` with numpy arrays (wrapped,
not copied, on the way in). IO binding with OrtValues was measured too: 5-10 % slower per token on the small
model and no faster on the 6x384 one, its Python-side bookkeeping costing more than any copy it saves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gpt.errors import GPTError

FORMAT_VERSION = 1
METADATA_KEYS = ("vocab", "block_size", "n_layer", "n_head", "n_embd", "val_loss", "format_version")
EXPORT_HINT = "export one with `python -m export.onnx --ckpt out`"


def input_names(n_layer: int) -> list[str]:
    """Hugging Face optimum naming: `input_ids`, then `past_key_values.{i}.key` / `.value` per layer."""
    return ["input_ids"] + [f"past_key_values.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


def output_names(n_layer: int) -> list[str]:
    return ["logits"] + [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


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


def parse_metadata(props: dict[str, str], path: Path) -> dict:
    """Vocabulary and shape from the file's metadata, or a one-line `GPTError` saying what is wrong."""
    missing = [k for k in METADATA_KEYS if k not in props]
    if missing:
        raise GPTError(f"{path} lacks metadata {', '.join(missing)}: it was not written by export.onnx; "
                       f"{EXPORT_HINT}")
    try:
        meta = {k: int(props[k]) for k in ("block_size", "n_layer", "n_head", "n_embd", "format_version")}
        vocab = json.loads(props["vocab"])
        val_loss = json.loads(props["val_loss"])
    except ValueError as e:
        raise GPTError(f"{path} has malformed metadata ({e}); {EXPORT_HINT}") from None
    if meta["format_version"] != FORMAT_VERSION:
        raise GPTError(f"{path} has format_version {meta['format_version']}; this sampler reads "
                       f"{FORMAT_VERSION}; re-export it with this version's `python -m export.onnx`")
    if (not isinstance(vocab, list) or not vocab or len(set(vocab)) != len(vocab)
            or any(not isinstance(c, str) or len(c) != 1 for c in vocab)):
        raise GPTError(f"{path}: metadata 'vocab' is not a list of distinct characters; {EXPORT_HINT}")
    if min(meta["block_size"], meta["n_layer"], meta["n_head"], meta["n_embd"]) < 1 or meta["n_embd"] % meta["n_head"]:
        raise GPTError(f"{path}: metadata gives an impossible model shape {meta}; {EXPORT_HINT}")
    return {**meta, "vocab": vocab, "val_loss": val_loss}


def session_options(threads: int | None = None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: a batch-1 decode step is ~100 small ops, and spinning workers
    # made 2 threads 2-4x slower than 1 on a busy 2-core machine (with spinning off, 2 threads ~= 1 there).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: no warnings about unused initializers on stderr
    return so


def open_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session, with every way the file can be wrong turned into a one-line `GPTError`."""
    path = Path(path)
    if not path.is_file():
        raise GPTError(f"ONNX file {path} does not exist; {EXPORT_HINT}")
    if path.stat().st_size == 0:
        raise GPTError(f"ONNX file {path} is empty; {EXPORT_HINT}")
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads),
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, InvalidGraph, ...)
        reason = " ".join(str(e).split())
        if len(reason) > 300:
            reason = reason[:300] + " ..."
        hint = ""
        if _version(ort.__version__) < (1, 23):
            hint = (f"; opset-23 exports need onnxruntime >= 1.23 (installed: {ort.__version__}): upgrade it, "
                    "or re-export with `python -m export.onnx --opset 18 --attention sdpa`")
        raise GPTError(f"{path} is not a loadable ONNX model (truncated or not ONNX?): {reason}{hint}") from None


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class OrtDecoder:
    """`prefill(ids [B, T]) -> logits [B, V]` and `step(ids [B, 1]) -> logits [B, V]` over one session."""

    def __init__(self, session: ort.InferenceSession, meta: dict, path: Path | str = "<model>"):
        self.session = session
        self.path = Path(path)
        self.vocab: list[str] = meta["vocab"]
        self.block_size: int = meta["block_size"]
        self.n_layer, self.n_head = meta["n_layer"], meta["n_head"]
        self.head_dim = meta["n_embd"] // meta["n_head"]
        self.val_loss = meta["val_loss"]
        self.input_names = input_names(self.n_layer)
        self.output_names = output_names(self.n_layer)
        got_in = [i.name for i in session.get_inputs()]
        got_out = [o.name for o in session.get_outputs()]
        if got_in != self.input_names or got_out != self.output_names:
            raise GPTError(f"{path}: graph inputs/outputs do not match its metadata ({len(got_in)} inputs, "
                           f"{len(got_out)} outputs for n_layer {self.n_layer}); {EXPORT_HINT}")
        vocab_dim = session.get_outputs()[0].shape[-1]
        if isinstance(vocab_dim, int) and vocab_dim != len(self.vocab):
            raise GPTError(f"{path}: logits have {vocab_dim} entries but the vocabulary {len(self.vocab)}")
        self.past: list[np.ndarray] = []
        self.length = 0

    @classmethod
    def from_file(cls, path: Path | str, threads: int | None = None) -> OrtDecoder:
        session = open_session(Path(path), threads)
        meta = parse_metadata(session.get_modelmeta().custom_metadata_map, Path(path))
        return cls(session, meta, path)

    def forward(self, ids: np.ndarray, past: list[np.ndarray]) -> np.ndarray:
        """Logits for every position [B, T, V]; the graph's `present.*` become the cache."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[1] < 1:
            raise GPTError(f"token ids must be a [batch, seq] array with seq >= 1, got shape {ids.shape}")
        if len(past) != 2 * self.n_layer or past[0].shape[0] != ids.shape[0]:
            raise GPTError(f"the KV cache holds a batch of {past[0].shape[0] if past else 0}, "
                           f"the tokens a batch of {ids.shape[0]}")
        length = past[0].shape[2] + ids.shape[1]
        if length > self.block_size:
            raise GPTError(f"sequence of {length} tokens exceeds block_size {self.block_size}")
        feeds = dict(zip(self.input_names, [ids, *past], strict=True))
        try:
            outputs = self.session.run(self.output_names, feeds)
        except Exception as e:  # e.g. token ids outside the vocabulary reach the embedding Gather
            raise GPTError(f"onnxruntime failed on {self.path}: {' '.join(str(e).split())[:300]}") from None
        self.past, self.length = outputs[1:], length
        return outputs[0]

    def empty_cache(self, batch_size: int) -> list[np.ndarray]:
        empty = np.zeros((batch_size, self.n_head, 0, self.head_dim), dtype=np.float32)
        return [empty] * (2 * self.n_layer)

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.vocab)):
            raise GPTError(f"token ids must be in [0, {len(self.vocab)}), got {ids.min()}..{ids.max()}")
        return np.array(self.forward(ids, self.empty_cache(len(ids)))[:, -1], dtype=np.float32)

    def step(self, ids: np.ndarray) -> np.ndarray:
        if not self.past:
            raise GPTError("step() before prefill(): the decoder holds no KV cache")
        return np.array(self.forward(ids, self.past)[:, -1], dtype=np.float32)
