"""PyTorch decoder: eager or compiled, with a static KV cache or full-window recompute (nanoGPT-style).

Compiled with a cache, as gpt-fast does: the prefill runs eager (its length varies), and the one-token step
`decode_one_token` is compiled on its own with `fullgraph=True` and static shapes. The step's positions are
reserved on the host and passed in as a tensor, so every step runs the one graph compiled at the first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gpt.model import GPT
from gpt.model.device import resolve_device
from gpt.model.kv_cache import KVCache


def decode_one_token(model: GPT, cache: KVCache, ids: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """Logits [B, V] after appending ids [B, 1] at position input_pos [1]."""
    logits, _ = model(ids, cache=cache, input_pos=input_pos)
    return logits[:, -1]


def compile_options(device: torch.device) -> dict:
    """On a CPU, inductor's C++ wrapper (no Python between kernels) and freezing (weights folded in as
    constants, linear layers prepacked for oneDNN) each took the compiled step from ~1.25x to ~1.8x eager on
    the `cpu` preset; frozen weights are fine here, a decoder never trains."""
    return {"cpp_wrapper": True, "freezing": True} if device.type == "cpu" else {}


class TorchDecoder:
    def __init__(self, model: GPT, vocab: list[str], use_cache: bool = True, compile: bool = False):
        self.model = model.eval()
        self.vocab = vocab
        self.block_size = model.config.block_size
        self.use_cache = use_cache
        self.device = next(model.parameters()).device
        self.forward = torch.compile(model, dynamic=True) if compile and not use_cache else model
        self.decode = decode_one_token
        if compile and use_cache:
            self.decode = torch.compile(decode_one_token, fullgraph=True, options=compile_options(self.device))
        self.cache = None
        self.window: torch.Tensor | None = None

    @classmethod
    def from_checkpoint(cls, ckpt_dir: Path, device: str = "cpu", use_cache: bool = True, compile: bool = False,
                        threads: int | None = None, attention: str = "sdpa") -> TorchDecoder:
        from gpt.model.checkpoint import load_checkpoint

        device = resolve_device(device)
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
        if self.cache is None or self.cache.batch_size != x.size(0):
            self.cache = self.model.new_cache(x.size(0))
        self.cache.reset()
        return self._logits(x, self.cache)

    def step(self, ids: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(ids, dtype=np.int64)).to(self.device)  # fresh strides: a guard of the graph
        if not self.use_cache:
            self.window = torch.cat([self.window, x], dim=1)
            return self._logits(self.window)
        with torch.inference_mode():
            logits = self.decode(self.model, self.cache, x, self.cache.reserve(x.size(1)))
        return logits.float().cpu().numpy()
