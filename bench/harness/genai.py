"""onnxruntime-genai on our files, opened one way for every benchmark that times it beside ours: whether it can
run (the package, and the genai_config.json that `python -m export.onnx --genai` writes beside the file), and its
model on the file with our thread count."""

from __future__ import annotations

import importlib.util
import json
import os
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


def open_genai(onnx: Path, threads: int, draft: Path | None = None, **overlay: Any) -> tuple[ModuleType, Any]:
    """(the onnxruntime_genai module, its Model of `onnx` with `threads` intra-op threads); `draft`: a smaller
    file (with its own genai_config.json beside it) as the model's `draft` section, for genai's draft-model
    speculation; `overlay` adds top-level sections of genai_config.json (e.g. `engine`)."""
    import onnxruntime_genai as og

    threads_option = {"intra_op_num_threads": threads}
    model: dict[str, Any] = {"decoder": {"filename": onnx.name, "session_options": threads_option}}
    if draft is not None:
        section = json.loads((draft.parent / CONFIG).read_text())["model"]["decoder"]
        where = os.path.relpath(draft.resolve(), onnx.parent.resolve())  # genai joins it to the config's folder
        model["draft"] = section | {"filename": where,
                                    "session_options": section.get("session_options", {}) | threads_option}
    config = og.Config(str(onnx.parent))
    config.overlay(json.dumps({**overlay, "model": model}))
    return og, og.Model(config)
