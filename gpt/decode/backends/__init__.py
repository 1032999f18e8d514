"""Decoders: one small object per backend behind `prefill(ids)` / `step(ids)` (see gpt.decode.loop).

Each backend's heavy imports (torch, onnxruntime) happen only when that backend is chosen, so the
onnxruntime path never imports torch.
"""

from __future__ import annotations

from pathlib import Path

from gpt.errors import GPTError

BACKENDS = ("torch", "onnxruntime", "onnxruntime-genai")


def open_decoder(backend: str, path: Path, *, threads: int | None = None, device: str = "cpu",
                 use_cache: bool = True, compile: bool = False):
    """A decoder for `path`: a checkpoint directory (torch) or an .onnx file (onnxruntime; a directory
    means its `model.onnx`)."""
    path = Path(path)
    onnx_file = path / "model.onnx" if path.is_dir() else path
    if backend == "onnxruntime":
        from gpt.decode.backends.ort_decoder import open_onnx

        return open_onnx(onnx_file, threads=threads)
    if backend == "onnxruntime-genai":
        from gpt.decode.backends.genai_decoder import GenaiDecoder

        return GenaiDecoder(onnx_file, threads=threads)
    if backend == "torch":
        from gpt.decode.backends.torch_decoder import TorchDecoder

        return TorchDecoder.from_checkpoint(path, device=device, use_cache=use_cache, compile=compile,
                                            threads=threads)
    raise GPTError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
