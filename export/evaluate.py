"""Validation loss of an exported file over the whole val split (as gpt.train's full-pass figure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpt.decode.backends.ort_decoder import open_onnx
from gpt.errors import GPTError
from gpt.tokenizer import CharTokenizer


def val_tokens(tokenizer: CharTokenizer, data: Path | None, data_dir: Path) -> np.ndarray:
    from gpt.data import load_shakespeare, load_text, split

    text = load_text(data) if data else load_shakespeare(data_dir)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    _, val = split(ids)
    if len(val) < 2:
        raise GPTError("the validation split holds fewer than 2 tokens; use more text")
    return val


def onnx_loss(path: Path, data: np.ndarray, block: int, batch_size: int = 16, threads: int | None = None) -> float:
    """Mean next-token loss over `data` in non-overlapping block_size windows (gpt.data.eval_windows)."""
    from gpt.data import eval_windows

    decoder = open_onnx(path, threads=threads)
    total, count = 0.0, 0
    for x, y in eval_windows(data, block, batch_size):
        logits = decoder.logits(x).astype(np.float64)
        m = logits.max(-1, keepdims=True)
        logz = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
        total += float((logz - np.take_along_axis(logits, y[..., None], -1)[..., 0]).sum())
        count += y.size
    return total / count
