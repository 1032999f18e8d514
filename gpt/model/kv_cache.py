"""Key/value caches. One model forward serves training (no cache), prefill and decode: a layer hands its new
keys/values and their positions to `update(layer, k, v, input_pos)` and attends over what comes back.

`KVCache` is static in the style of gpt-fast: preallocated [n_layer, B, H, max_len, D] buffers, new entries
written at the `input_pos` tensor, attention over the *whole* buffer with a [T, max_len] mask. Every tensor
shape of a one-token step is then the same at every step, so `torch.compile(fullgraph=True)` compiles the
step once (gpt/decode/backends/torch_decoder.py). Positions are reserved on the host (`reserve`), outside the graph.

`ConcatKVCache` (and the export caches in export/graph.py) take past tensors and return `present`, as ONNX
wants. A cache with `attends = True` (export only) takes the layer's packed q/k/v and returns the attention
output itself: there one ONNX op reads and writes the cache, and the model keeps its one forward.
"""

from __future__ import annotations

from typing import Protocol

import torch

from gpt.errors import GPTError


class Cache(Protocol):
    attends: bool

    def reserve(self, n: int) -> torch.Tensor: ...

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor,
               input_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]: ...

    def attend(self, layer: int, qkv: torch.Tensor) -> torch.Tensor: ...


def check_length(end: int | torch.SymInt, block_size: int) -> None:
    if isinstance(end, int) and end > block_size:
        raise GPTError(f"sequence of {end} tokens exceeds block_size {block_size}")


class KVCache:
    """Static, preallocated cache: the keys and values of `length` positions, in buffers of `max_len`.

    One [B, H, max_len, D] tensor per layer, written with an index_put_ on the whole tensor: inductor then
    writes the new entry in place (a write through a view of one 5-D tensor made it copy the whole cache).
    """

    attends = False

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (batch_size, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.batch_size = batch_size
        # row p: the keys position p may see (0..p); a step's mask is the rows of its positions
        self.visible = torch.ones(max_len, max_len, dtype=torch.bool, device=device).tril()
        self.max_len = max_len
        self.length = 0

    def reserve(self, n: int) -> torch.Tensor:
        """The positions of the next `n` tokens (host side: checks room and advances `length`)."""
        check_length(self.length + n, self.max_len)
        start, self.length = self.length, self.length + n
        return torch.arange(start, start + n, device=self.visible.device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor,
               input_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k_all, v_all = self.k[layer], self.v[layer]
        k_all[:, :, input_pos] = k
        v_all[:, :, input_pos] = v
        return k_all, v_all, self.visible[input_pos]

    def reset(self) -> None:
        self.length = 0


class ConcatKVCache:
    """Functional cache for export: past tensors in, `present` (past + new) out, as Hugging Face does."""

    attends = False

    def __init__(self, past: list[tuple[torch.Tensor, torch.Tensor]]):
        self.past = past
        self.present: list[tuple[torch.Tensor, torch.Tensor]] = list(past)

    def reserve(self, n: int) -> torch.Tensor:
        start = self.past[0][0].size(2)  # a SymInt while exporting
        return torch.arange(start, start + n, device=self.past[0][0].device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor,
               input_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pk, pv = self.past[layer]
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        self.present[layer] = (k, v)
        return k, v, None  # keys are exactly the positions so far: the offset causal mask applies
