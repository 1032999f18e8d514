"""Build the ONNX graph: GPT.forward traced once, its attention supplied by an export cache per layout.

    gqa    `com.microsoft.GroupQueryAttention` per layer (packed QKV, past == present buffer of block_size
           positions, lengths from `attention_mask`): in-place cache, fixed decode shapes. onnxruntime only.
    onnx   the standard opset-23 `Attention` op per layer, concat-style cache: any opset-23 runtime.
    sdpa / naive   the model's own attention traced op by op (any opset >= 18), concat-style cache.

Every layout runs the same `GPT.forward`; only the cache object differs (see `gpt.model.kv_cache`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import torch
import torch.nn as nn

from gpt.decode.onnx_format import OnnxMeta, input_names, output_names
from gpt.errors import GPTError
from gpt.model import GPT
from gpt.model.attention import offset_causal_mask
from gpt.model.kv_cache import ConcatKVCache
from gpt.tokenizer import CharTokenizer

ATTENTION = ("gqa", "onnx", "sdpa", "naive")
DEFAULT_OPSET = 23  # the first with the Attention op; gqa needs >= 21 only for its other ops


class OnnxAttentionCache(ConcatKVCache):
    """Each layer's attention is ONE opset-23 `Attention` op: packed q/k/v, past, offset causal mask in;
    output and present out (12 fewer nodes per layer than the traced split/transpose/concat chain)."""

    attends = True

    def __init__(self, past: list[tuple[torch.Tensor, torch.Tensor]], n_embd: int, n_head: int):
        super().__init__(past)
        self.n_embd, self.n_head = n_embd, n_head

    def attend(self, layer: int, qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = qkv.split(self.n_embd, dim=2)
        pk, pv = self.past[layer]
        mask = offset_causal_mask(q.size(1), pk.size(2) + q.size(1), q.device)
        y, k, v, _ = torch.onnx.ops.attention(q, k, v, mask, pk, pv, q_num_heads=self.n_head,
                                              kv_num_heads=self.n_head)
        self.present[layer] = (k, v)
        return y


class GQACache:
    """Each layer's attention is ONE `com.microsoft.GroupQueryAttention` op whose past and present are the
    same [B, H, block_size, D] buffer when the caller binds them so: it writes the new keys/values at
    position `seqlens_k - T + 1` and attends over the first `seqlens_k + 1`. `num_heads == kv_num_heads` makes
    it plain multi-head attention; `do_rotary` stays 0 (our positions are learned embeddings).

    Each row's length is its own: row b of `attention_mask` holds ones for its `lengths[b]` positions (past
    + new) and zeros after them, so rows at different lengths decode in one step (continuous batching), and
    the new tokens' positions are `lengths[b] - T .. lengths[b] - 1`, per row."""

    attends = True

    def __init__(self, buffers: list[tuple[torch.Tensor, torch.Tensor]], attention_mask: torch.Tensor,
                 n_embd: int, n_head: int):
        self.buffers, self.present = buffers, list(buffers)
        self.n_embd, self.n_head = n_embd, n_head
        self.lengths = attention_mask.sum(1, keepdim=True)  # [B, 1]
        self.seqlens_k = (self.lengths[:, 0] - 1).to(torch.int32)
        self.total_length = torch.full((), attention_mask.size(1), dtype=torch.int32)

    def reserve(self, n: int) -> torch.Tensor:
        return self.lengths - n + torch.arange(n)  # [B, n]: each row's own positions

    def attend(self, layer: int, qkv: torch.Tensor) -> torch.Tensor:
        pk, pv = self.buffers[layer]
        y, k, v = torch.onnx.ops.symbolic_multi_out(
            "com.microsoft::GroupQueryAttention",
            [qkv, None, None, pk, pv, self.seqlens_k, self.total_length],
            {"num_heads": self.n_head, "kv_num_heads": self.n_head},
            dtypes=[qkv.dtype] * 3, shapes=[(*qkv.shape[:2], self.n_embd), pk.shape, pv.shape], version=1)
        self.present[layer] = (k, v)
        return y


class ExportWrapper(nn.Module):
    """Flat tensors in and out, as ONNX wants: (input_ids, [attention_mask,] past k0, past v0, ...) ->
    (logits, present k0, present v0, ...), through GPT.forward with the layout's cache."""

    def __init__(self, model: GPT, attention: str):
        super().__init__()
        self.model, self.attention = model, attention

    def forward(self, input_ids: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = self.model.config
        if self.attention == "gqa":
            mask, *past = rest
        else:
            past = list(rest)
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(c.n_layer)]
        if self.attention == "gqa":
            cache = GQACache(pairs, mask, c.n_embd, c.n_head)
        elif self.attention == "onnx":
            cache = OnnxAttentionCache(pairs, c.n_embd, c.n_head)
        else:
            cache = ConcatKVCache(pairs)
        logits, _ = self.model(input_ids, cache=cache)
        return (logits, *[t for kv in cache.present for t in kv])


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torch.onnx.export and the quantizers are chatty (warnings, INFO logs, progress prints): keep stage lines
    clean."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def check_opset(attention: str, opset: int) -> None:
    if attention not in ATTENTION:
        raise GPTError(f"unknown export attention {attention!r}; choose one of: {', '.join(ATTENTION)}")
    if not 18 <= opset <= 23:
        raise GPTError(f"--opset must be in [18, 23], got {opset}")
    if attention == "onnx" and opset < 23:
        raise GPTError(f"--attention onnx needs --opset 23 (got {opset}); add --attention sdpa for older opsets")
    if attention == "gqa" and opset < 21:
        raise GPTError(f"--attention gqa needs --opset 21 or later (got {opset}); or use --attention sdpa")


def export_proto(model: GPT, opset: int = DEFAULT_OPSET, attention: str = "gqa"):
    """Trace the model with dynamic batch/seq/past into an onnx.ModelProto."""
    c = model.config
    check_opset(attention, opset)
    if attention == "onnx" and not hasattr(getattr(torch.onnx, "ops", None), "attention"):
        raise GPTError(f"--attention onnx needs torch.onnx.ops.attention (torch >= 2.9; this is "
                       f"{torch.__version__}); use --attention sdpa")
    if attention in ("sdpa", "naive"):
        model.set_attention(attention)
    # Example sizes > 1 everywhere: torch.export specializes dimensions that are 0 or 1 in the example.
    B, T, P = 2, 3, 2
    if T + P > c.block_size:
        raise GPTError(f"block_size {c.block_size} is too small to export (needs >= {T + P})")
    batch = torch.export.Dim("batch_size", min=1, max=65536)
    seq = torch.export.Dim("sequence_length", min=1, max=c.block_size)
    ids = torch.zeros((B, T), dtype=torch.int64)
    if attention == "gqa":  # past = present: a fixed buffer of block_size positions
        past = [torch.zeros((B, c.n_head, c.block_size, c.head_dim)) for _ in range(2 * c.n_layer)]
        total = torch.export.Dim("total_sequence_length", min=1, max=c.block_size)
        args = (ids, torch.ones((B, T + P), dtype=torch.int64), *past)
        dynamic = ({0: batch, 1: seq}, ({0: batch, 1: total}, *({0: batch} for _ in past)))
    else:
        past = [torch.zeros((B, c.n_head, P, c.head_dim)) for _ in range(2 * c.n_layer)]
        past_len = torch.export.Dim("past_sequence_length", min=0, max=c.block_size)
        args = (ids, *past)
        dynamic = ({0: batch, 1: seq}, tuple({0: batch, 2: past_len} for _ in past))
    layout = "gqa" if attention == "gqa" else "onnx"
    try:
        with quiet(), torch.no_grad():
            program = torch.onnx.export(ExportWrapper(model.eval(), attention), args, None, dynamo=True,
                                        opset_version=opset, input_names=input_names(c.n_layer, layout),
                                        output_names=output_names(c.n_layer), dynamic_shapes=dynamic,
                                        optimize=True, verbose=False)
    except Exception as e:
        raise GPTError(f"torch.onnx.export failed at opset {opset}: {type(e).__name__}: "
                       f"{' '.join(str(e).split())[:300]}") from None
    return program.model_proto


def add_metadata(proto, tokenizer: CharTokenizer, model: GPT, val_loss: float | None, attention: str,
                 data_sha256: str | None = None) -> None:
    c = model.config
    meta = OnnxMeta(vocab=tokenizer.itos, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
                    n_embd=c.n_embd, val_loss=val_loss, layout="gqa" if attention == "gqa" else "onnx",
                    data_sha256=data_sha256)
    del proto.metadata_props[:]
    for key, value in meta.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def serialize(proto) -> bytes:
    if proto.ByteSize() >= 2**31 - 1:
        raise GPTError("the model is over 2 GB, too large for a single-file ONNX export")
    return proto.SerializeToString()
