"""Causal self-attention backends, chosen by name at run time.

Every backend computes the same function: softmax(q·kᵀ/√d + causal mask)·v with **no dropout on the
attention probabilities**. Keys may be longer than queries (decoding with a KV cache): query i then sits
at key position Tk - Tq + i, so the causal mask is offset by the past length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gpt.errors import GPTError

BACKENDS = ("naive", "sdpa", "triton")


def offset_causal_mask(tq: int, tk: int, device: torch.device) -> torch.Tensor:
    """Boolean [tq, tk] mask, True where key j is visible to query i (j <= i + tk - tq)."""
    i = torch.arange(tq, device=device).unsqueeze(1) + (tk - tq)
    j = torch.arange(tk, device=device).unsqueeze(0)
    return j <= i


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The naive path's explicit probabilities [..., Tq, Tk] in float32 (also read by `gpt.inspect`); the
    offset causal mask unless one is given."""
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
    if mask is None:
        mask = offset_causal_mask(q.size(-2), k.size(-2), q.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1)


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """The reference: explicit scores, masked softmax, weighted sum."""
    return attention_weights(q, k, mask).to(q.dtype) @ v


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, has_past: bool,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """`is_causal=True` is only right when queries and keys are the same positions, so a cache gets a mask
    (its own, or the offset causal one)."""
    if mask is None and not has_past:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if mask is None:
        mask = offset_causal_mask(q.size(-2), k.size(-2), q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str,
                     has_past: bool = False, mask: torch.Tensor | None = None) -> torch.Tensor:
    """q: [B, H, Tq, D]; k, v: [B, H, Tk, D] with Tk >= Tq. Returns [B, H, Tq, D].

    `mask` ([Tq, Tk] bool, True = visible) comes from a static cache whose buffer is longer than the keys
    written so far; without one, query i sees keys j <= i + Tk - Tq.
    """
    if backend == "sdpa":
        return sdpa_attention(q, k, v, has_past, mask)
    if backend == "naive":
        return naive_attention(q, k, v, mask)
    if backend == "triton":
        from kernels.attention import flash_attention

        if mask is not None:  # a static cache's rows are a causal prefix: the kernel takes just that prefix
            end = int(mask[-1].sum())
            k, v = k[:, :, :end], v[:, :, :end]
        return flash_attention(q, k, v)
    raise GPTError(f"unknown attention backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
