"""The ONNX file format of this project, in one torch-free place: the writer (`export/`) and the reader
(`gpt/decode/backends/`) both import it, so neither borrows from the other.

Two layouts of the same model, told apart by the `layout` metadata key:

    onnx  standard opset-23 `Attention` ops, concat-style cache: past [B, H, P, D] in, present
          [B, H, P + T, D] out. Portable: any ONNX runtime with opset 23 (and the web).
    gqa   onnxruntime's `com.microsoft.GroupQueryAttention`: past and present are one preallocated buffer
          [B, H, block_size, D] that the op writes in place; `attention_mask` [B, P + T] tells it each row's
          length (row b: ones for its own past + new positions, then zeros), from which the graph also takes
          each row's positions, so rows at different lengths decode in one step (gpt.engine). Decode shapes
          never change, nothing is copied: the fast CPU layout.

Inputs `input_ids` int64 [B, T], (gqa only) `attention_mask` int64 [B, P + T], then
`past_key_values.{i}.key/.value`; outputs `logits` [B, T, V], then `present.{i}.key/.value` (Hugging Face
optimum's names, which onnxruntime-genai reads too). Vocabulary and shape travel in `metadata_props`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gpt.config import ModelConfig
from gpt.errors import GPTError

FORMAT_VERSION = 3  # 2: the `layout` key (gqa added); 3: gqa positions per row from attention_mask
LAYOUTS = ("gqa", "onnx")
METADATA_KEYS = ("vocab", "block_size", "n_layer", "n_head", "n_embd", "val_loss", "layout", "format_version")
EXPORT_HINT = "export one with `python -m export.onnx --ckpt out`"


def input_names(n_layer: int, layout: str) -> list[str]:
    """`input_ids`, the gqa layout's `attention_mask`, then `past_key_values.{i}.key` / `.value` per layer."""
    head = ["input_ids", "attention_mask"] if layout == "gqa" else ["input_ids"]
    return head + [f"past_key_values.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


def output_names(n_layer: int) -> list[str]:
    return ["logits"] + [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


@dataclass(frozen=True)
class OnnxMeta:
    """What a sampler needs to know about a file, from its metadata alone."""

    vocab: list[str]
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    val_loss: float | None
    layout: str
    data_sha256: str | None = None  # of the training text, where the checkpoint recorded it (optional key)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_props(self) -> dict[str, str]:
        return {
            "vocab": json.dumps(self.vocab, ensure_ascii=False),
            "block_size": str(self.block_size),
            "n_layer": str(self.n_layer),
            "n_head": str(self.n_head),
            "n_embd": str(self.n_embd),
            "val_loss": json.dumps(self.val_loss),
            "layout": self.layout,
            "format_version": str(FORMAT_VERSION),
        } | ({"data_sha256": self.data_sha256} if self.data_sha256 else {})


def parse_metadata(props: dict[str, str], path: Path) -> OnnxMeta:
    """The file's metadata as an `OnnxMeta`, or a one-line `GPTError` saying what is wrong and how to fix it."""
    if "format_version" in props and props["format_version"] != str(FORMAT_VERSION):
        raise GPTError(f"{path} has format_version {props['format_version']}; this version reads "
                       f"{FORMAT_VERSION}: re-export it with `python -m export.onnx --ckpt CKPT --out {path}` "
                       "(CKPT: the checkpoint directory it came from)")
    missing = [k for k in METADATA_KEYS if k not in props]
    if missing:
        raise GPTError(f"{path} lacks metadata {', '.join(missing)}: it was not written by export.onnx (or by "
                       f"an older version); {EXPORT_HINT} (`--attention onnx` for the portable layout)")
    if props["layout"] not in LAYOUTS:
        raise GPTError(f"{path} has an unknown layout {props['layout']!r} (this sampler reads "
                       f"{', '.join(LAYOUTS)}); re-export it with `python -m export.onnx --attention onnx`")
    try:
        shape = {k: int(props[k]) for k in ("block_size", "n_layer", "n_head", "n_embd")}
        vocab = json.loads(props["vocab"])
        val_loss = json.loads(props["val_loss"])
    except ValueError as e:
        raise GPTError(f"{path} has malformed metadata ({e}); {EXPORT_HINT}") from None
    if (not isinstance(vocab, list) or not vocab or len(set(vocab)) != len(vocab)
            or any(not isinstance(c, str) or len(c) != 1 for c in vocab)):
        raise GPTError(f"{path}: metadata 'vocab' is not a list of distinct characters; {EXPORT_HINT}")
    try:
        ModelConfig(vocab_size=len(vocab), dropout=0.0, **shape)  # the one validator of a model shape
    except GPTError as e:
        raise GPTError(f"{path}: metadata gives an impossible model shape ({e}); {EXPORT_HINT}") from None
    return OnnxMeta(vocab=vocab, val_loss=val_loss, layout=props["layout"], data_sha256=props.get("data_sha256"),
                    **shape)
