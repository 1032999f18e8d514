"""A character-level GPT: train with torch, serve with onnxruntime.

Importing `gpt` does not import torch, so the base install (numpy + onnxruntime) can sample:

    import gpt
    model = gpt.load("out/model.onnx")             # or gpt.load("out") for the torch checkpoint
    print(model.generate("ROMEO:", max_new_tokens=200, temperature=0.8)[0])
"""

from __future__ import annotations

from pathlib import Path

from gpt.api import TextGenerator


def load(path: str | Path, backend: str | None = None, **options) -> TextGenerator:
    """Load a checkpoint directory (torch backend) or an `.onnx` file (onnxruntime backend).

    `backend` defaults from the path; `options` are those of `gpt.decoders.open_decoder`
    (threads, device, use_cache, compile).
    """
    from gpt.decoders import open_decoder

    path = Path(path)
    backend = backend or ("onnxruntime" if path.suffix == ".onnx" else "torch")
    return TextGenerator(open_decoder(backend, path, **options))


__all__ = ["TextGenerator", "load"]
