"""Record a GPT's internals during one ordinary forward pass, with forward hooks.

The hooks exist only inside `recording`, so the model, its training and its export are untouched and pay
nothing otherwise. Attention probabilities are recomputed from the q and k the layer itself produced, with
the naive backend's explicit softmax (`gpt.model.attention.attention_weights`): the backend the model runs (sdpa,
triton) never materialises them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from gpt.model import GPT
from gpt.model.attention import attention_weights


@dataclass
class Trace:
    """One prompt's pass through the model; batch dimension dropped, every tensor float32 on the CPU.

    The residual stream meets 2·n_layer + 1 LayerNorms (ln_1 and ln_2 of each block, then ln_f):
    `ln_inputs[i]` is the stream entering LayerNorm i and `ln_outputs[i]` what it hands on.
    """

    ids: list[int]
    logits: torch.Tensor  # [T, V], the model's own output
    attention: torch.Tensor  # [L, H, T, T]: row = query position, column = key position
    values: torch.Tensor  # [L, H, T, head_dim]
    attn_outputs: torch.Tensor  # [L, T, C]: each attention sub-layer's output, after c_proj
    embeddings: torch.Tensor  # [T, C]: token + position embedding, the stream entering block 0
    block_outputs: torch.Tensor  # [L, T, C]: the residual stream after each block
    ln_inputs: torch.Tensor  # [2L+1, T, C]
    ln_outputs: torch.Tensor  # [2L+1, T, C]


Hook = Callable[[nn.Module, tuple, torch.Tensor], None]  # what `register_forward_hook` calls


def layer_norm_names(n_layer: int) -> list[str]:
    """The LayerNorms in the order the residual stream meets them."""
    return [f"{i}.{ln}" for i in range(n_layer) for ln in ("ln_1", "ln_2")] + ["ln_f"]


@dataclass
class _Recorder:
    n_head: int
    qkv: list[torch.Tensor] = field(default_factory=list)
    attn_outputs: list[torch.Tensor] = field(default_factory=list)
    block_outputs: list[torch.Tensor] = field(default_factory=list)
    ln_inputs: list[torch.Tensor] = field(default_factory=list)
    ln_outputs: list[torch.Tensor] = field(default_factory=list)

    def hooks(self, model: GPT) -> Iterator[tuple[nn.Module, Hook]]:
        def keep(store: list[torch.Tensor]) -> Hook:
            return lambda module, args, output: store.append(output.detach()[0].float().cpu())

        def keep_layer_norm(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.ln_inputs.append(args[0].detach()[0].float().cpu())
            self.ln_outputs.append(output.detach()[0].float().cpu())

        for block in model.h:
            yield block.attn.c_attn, keep(self.qkv)
            yield block.attn, keep(self.attn_outputs)
            yield block, keep(self.block_outputs)
            yield block.ln_1, keep_layer_norm
            yield block.ln_2, keep_layer_norm
        yield model.ln_f, keep_layer_norm

    def heads(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as [L, H, T, head_dim], split the way `CausalSelfAttention` splits them."""
        qkv = torch.stack(self.qkv)  # [L, T, 3C]
        n_layer, T, three_c = qkv.shape
        return tuple(t.view(n_layer, T, self.n_head, -1).transpose(1, 2) for t in qkv.split(three_c // 3, dim=2))


@contextmanager
def recording(model: GPT) -> Iterator[_Recorder]:
    """Hooks on every block for the duration of the `with`; removed even when the forward pass fails."""
    recorder = _Recorder(model.config.n_head)
    handles = [module.register_forward_hook(hook) for module, hook in recorder.hooks(model)]
    try:
        yield recorder
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def trace(model: GPT, ids: list[int]) -> Trace:
    """Run the model (eval mode) once on `ids` and return what every layer computed."""
    device = next(model.parameters()).device
    with recording(model) as r:
        logits, _ = model(torch.tensor([ids], device=device))
    q, k, v = r.heads()
    return Trace(
        ids=list(ids),
        logits=logits[0].float().cpu(),
        attention=attention_weights(q, k),
        values=v,
        attn_outputs=torch.stack(r.attn_outputs),
        embeddings=r.ln_inputs[0],
        block_outputs=torch.stack(r.block_outputs),
        ln_inputs=torch.stack(r.ln_inputs),
        ln_outputs=torch.stack(r.ln_outputs),
    )
