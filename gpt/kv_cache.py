"""Key/value caches. The attention layer only calls `update(layer, k, v) -> (all_k, all_v)`, so one
model forward serves training (no cache), prefill (empty cache) and decode (non-empty cache).

A cache with `attends = True` (the ONNX export's, in `export/graph.py`) instead takes the layer's packed
q/k/v and returns the attention output itself: there one ONNX op reads and writes the cache, and the model
keeps its one forward.
"""

from __future__ import annotations

from typing import Protocol

import torch

from gpt.errors import GPTError


class Cache(Protocol):
    attends: bool

    def past_length(self) -> int | torch.SymInt: ...

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def attend(self, layer: int, qkv: torch.Tensor) -> torch.Tensor: ...

    def advance(self, n: int) -> None: ...


class KVCache:
    """Static, preallocated cache in the style of gpt-fast: [n_layer, B, H, max_len, D] keys and values."""

    attends = False

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0

    def past_length(self) -> int:
        return self.length

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise GPTError(f"KV cache holds {self.max_len} positions; cannot grow to {end}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0


class ConcatKVCache:
    """Functional cache for export: past tensors in, `present` (past + new) out, as Hugging Face does."""

    attends = False

    def __init__(self, past: list[tuple[torch.Tensor, torch.Tensor]]):
        self.past = past
        self.present: list[tuple[torch.Tensor, torch.Tensor]] = list(past)

    def past_length(self) -> int:
        return self.past[0][0].size(2)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pk, pv = self.past[layer]
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        self.present[layer] = (k, v)
        return k, v

    def advance(self, n: int) -> None:
        """Lengths follow from the tensors themselves."""
