"""onnxruntime-genai on our files, opened one way for every benchmark that times it beside ours: whether it can
run (the package, and the genai_config.json that `python -m export.onnx --genai` writes beside the file), and its
model on the file with our thread count."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from export.genai import CONFIG


def genai_missing(onnx: Path) -> str | None:
    """Why onnxruntime-genai cannot run `onnx` (None when it can)."""
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return "onnxruntime-genai is not installed (pip install -e '.[genai]')"
    if not (onnx.parent / CONFIG).is_file():
        return (f"{onnx.parent / CONFIG} is missing (export with `python -m export.onnx --ckpt CKPT --genai` "
                "to write it)")
    return None


def genai_block_size(onnx: Path) -> int:
    """The longest sequence onnxruntime-genai runs on `onnx`: its genai_config.json's max_length (block_size)."""
    return json.loads((onnx.parent / CONFIG).read_text())["search"]["max_length"]


def open_genai(onnx: Path, threads: int, **overlay: Any) -> tuple[ModuleType, Any]:
    """(the onnxruntime_genai module, its Model of `onnx` with `threads` intra-op threads); `overlay` adds
    top-level sections of genai_config.json (e.g. `engine`)."""
    import onnxruntime_genai as og

    config = og.Config(str(onnx.parent))
    config.overlay(json.dumps({**overlay, "model": {"decoder": {
        "filename": onnx.name, "session_options": {"intra_op_num_threads": threads}}}}))
    return og, og.Model(config)
