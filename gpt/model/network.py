"""The GPT of the founding document, after nanoGPT: one small module per part of the paper.

tokens → token + learned position embedding → dropout → N × pre-LN Block → final LayerNorm →
vocabulary head (tied to the token embedding) → next-character logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt.config import ModelConfig
from gpt.errors import GPTError
from gpt.model.attention import BACKENDS, causal_attention
from gpt.model.kv_cache import Cache, KVCache, check_length


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.n_head, self.n_embd, self.layer = config.n_head, config.n_embd, layer
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.backend = "sdpa"

    def forward(self, x: torch.Tensor, cache: Cache | None = None,
                input_pos: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.c_attn(x)
        if cache is not None and cache.attends:  # an ONNX attention op that owns the cache (export only)
            return self.resid_dropout(self.c_proj(cache.attend(self.layer, qkv)))
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in qkv.split(self.n_embd, dim=2))
        mask = None
        if cache is not None:
            k, v, mask = cache.update(self.layer, k, v, input_pos)
        y = causal_attention(q, k, v, self.backend, has_past=cache is not None, mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: Cache | None = None,
                input_pos: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, input_pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig, attention: str = "sdpa"):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2: residual projections scaled by 1/sqrt(2·n_layer)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        self.set_attention(attention)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def set_attention(self, backend: str) -> None:
        """The attention backend is a run-time choice, not part of the checkpoint."""
        if backend not in BACKENDS:
            raise GPTError(f"unknown attention backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        for block in self.h:
            block.attn.backend = backend
        self.attention = backend

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch_size: int) -> KVCache:
        c = self.config
        p = self.wte.weight
        return KVCache(c.n_layer, batch_size, c.n_head, c.block_size, c.head_dim, p.dtype, p.device)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: Cache | None = None,
                input_pos: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for every position [B, T, V] (and the loss when targets are given).

        With a cache, `idx` holds only the new tokens, at positions `input_pos` ([T] tensor); left out, the
        cache reserves the next T positions itself. A compiled decode step reserves them outside the graph
        and passes them in, so no Python number of the cache enters (and re-specialises) the graph.
        """
        T = idx.size(1)
        if cache is None:
            check_length(T, self.config.block_size)
            input_pos = torch.arange(T, device=idx.device)
        elif input_pos is None:
            input_pos = cache.reserve(T)
        x = self.drop(self.wte(idx) + self.wpe(input_pos))
        for block in self.h:
            x = block(x, cache, input_pos)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))
        return logits, loss

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: weight decay on >= 2-D weights (matrices, embeddings), none on biases and LayerNorm gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
