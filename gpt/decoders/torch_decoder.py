"""PyTorch decoder: eager or compiled, with a static KV cache or full-window recompute (nanoGPT-style)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gpt.errors import GPTError
from gpt.model import GPT


class TorchDecoder:
    def __init__(self, model: GPT, vocab: list[str], use_cache: bool = True, compile: bool = False):
        self.model = model.eval()
        self.vocab = vocab
        self.block_size = model.config.block_size
        self.use_cache = use_cache
        self.device = next(model.parameters()).device
        self.forward = torch.compile(model, dynamic=True) if compile else model
        self.cache = None
        self.window: torch.Tensor | None = None

    @classmethod
    def from_checkpoint(cls, ckpt_dir: Path, device: str = "cpu", use_cache: bool = True, compile: bool = False,
                        threads: int | None = None, attention: str = "sdpa") -> TorchDecoder:
        from gpt.checkpoint import load_checkpoint

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise GPTError("--device cuda was asked for but CUDA is not available; use --device cpu")
        if threads:
            torch.set_num_threads(threads)
        model, tokenizer, _ = load_checkpoint(ckpt_dir, device=device, attention=attention)
        return cls(model, tokenizer.itos, use_cache=use_cache, compile=compile)

    def _logits(self, ids: torch.Tensor, cache=None) -> np.ndarray:
        with torch.inference_mode():
            logits, _ = self.forward(ids, cache=cache)
        return logits[:, -1].float().cpu().numpy()

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(ids)).to(self.device)
        if not self.use_cache:
            self.window = x
            return self._logits(x)
        if self.cache is None or self.cache.k.size(1) != x.size(0):
            self.cache = self.model.new_cache(x.size(0))
        self.cache.reset()
        return self._logits(x, self.cache)

    def step(self, ids: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(ids)).to(self.device)
        if not self.use_cache:
            self.window = torch.cat([self.window, x], dim=1)
            return self._logits(self.window)
        return self._logits(x, self.cache)
