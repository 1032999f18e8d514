"""The explain graph: one ONNX file that runs the model on a whole text (no cache) and returns what the web
page's explorer shows, beside the logits.

    input   input_ids [1, T]                  (T <= block_size)
    outputs logits    [1, T, V]               the model's own
            q, k, v   [L, H, T, head_dim]     each layer's heads, split as CausalSelfAttention splits them
            attention [L, H, T, T]            softmax(q·kᵀ/√d + causal mask): row = query, column = key
            lens      [L+1, T, V]             next-character probabilities read off the residual stream after
                                              the embedding (depth 0) and after each block, through ln_f and
                                              the tied head (the logit lens)

It is a file of its own (`OUT.explain.onnx`, written by `export.onnx --explain`), so the sampling file stays
what it was and pays nothing. Its attention is the naive backend's explicit softmax
(`gpt.model.attention.attention_weights`, the function gpt.inspect reads too) and its blocks are the model's own,
run by `GPT.forward` with a cache that attends (as the export caches do) and records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from export.graph import DEFAULT_OPSET, quiet
from gpt.decode.onnx_format import OnnxMeta
from gpt.errors import GPTError
from gpt.model import GPT
from gpt.model.attention import attention_weights
from gpt.tokenizer import CharTokenizer

OUTPUTS = ("logits", "q", "k", "v", "attention", "lens")
LAYOUT = "explain"  # in metadata_props: no sampler takes this file for a decoding one


def explain_path(onnx_path: Path) -> Path:
    """Where the explain graph of a sampling file lives: `model.onnx` -> `model.explain.onnx`."""
    return onnx_path.with_name(f"{onnx_path.stem}.explain.onnx")


class RecordingCache:
    """A cache with no past that attends itself: each layer's q, k, v and attention probabilities are kept,
    and the output is probabilities × v (the naive backend's arithmetic)."""

    attends = True

    def __init__(self, n_embd: int, n_head: int):
        self.n_embd, self.n_head = n_embd, n_head
        self.q: list[torch.Tensor] = []
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.attention: list[torch.Tensor] = []

    def reserve(self, n: int) -> torch.Tensor:
        return torch.arange(n)

    def attend(self, layer: int, qkv: torch.Tensor) -> torch.Tensor:
        B, T, _ = qkv.shape
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in qkv.split(self.n_embd, dim=2))
        weights = attention_weights(q, k)
        for store, t in ((self.q, q), (self.k, k), (self.v, v), (self.attention, weights)):
            store.append(t[0])
        return (weights.to(q.dtype) @ v).transpose(1, 2).reshape(B, T, self.n_embd)


class ExplainWrapper(nn.Module):
    """input_ids [1, T] -> the OUTPUTS, through GPT.forward; the residual stream after the embedding and after
    each block is read by forward hooks that live only for the call."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, c = self.model, self.model.config
        streams: list[torch.Tensor] = []
        handles = [m.h[0].register_forward_pre_hook(lambda module, args: streams.append(args[0]))]
        handles += [block.register_forward_hook(lambda module, args, out: streams.append(out)) for block in m.h]
        cache = RecordingCache(c.n_embd, c.n_head)
        try:
            logits, _ = m(input_ids, cache=cache)
        finally:
            for handle in handles:
                handle.remove()
        lens = torch.softmax(m.lm_head(m.ln_f(torch.cat(streams))).float(), dim=-1)
        return (logits, *(torch.stack(t) for t in (cache.q, cache.k, cache.v, cache.attention)), lens)


def export_explain_proto(model: GPT, opset: int = DEFAULT_OPSET):
    """Trace the explain graph (batch 1, dynamic length) into an onnx.ModelProto."""
    c = model.config
    if c.block_size < 3:
        raise GPTError(f"block_size {c.block_size} is too small to export (needs >= 3)")
    seq = torch.export.Dim("sequence_length", min=1, max=c.block_size)
    ids = torch.zeros((1, 3), dtype=torch.int64)  # > 1: torch.export specializes sizes 0 and 1
    try:
        with quiet(), torch.no_grad():
            program = torch.onnx.export(ExplainWrapper(model.eval()), (ids,), None, dynamo=True, opset_version=opset,
                                        input_names=["input_ids"], output_names=list(OUTPUTS),
                                        dynamic_shapes=({1: seq},), optimize=True, verbose=False)
    except Exception as e:
        raise GPTError(f"torch.onnx.export of the explain graph failed: {type(e).__name__}: "
                       f"{' '.join(str(e).split())[:300]}") from None
    return program.model_proto


def add_explain_metadata(proto, tokenizer: CharTokenizer, model: GPT) -> None:
    """The sampling file's metadata, with layout `explain`: the samplers refuse the file in one line."""
    c = model.config
    meta = OnnxMeta(vocab=tokenizer.itos, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
                    n_embd=c.n_embd, val_loss=None, layout=LAYOUT)
    del proto.metadata_props[:]
    for key, value in meta.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def explain_parity(path: Path, model: GPT, seed: int = 0) -> float:
    """Max |onnxruntime - PyTorch| over the logits of a random text of block_size characters (and the lens's last
    depth, which must be their softmax)."""
    import onnxruntime as ort

    c = model.config
    ids = np.random.default_rng(seed).integers(0, c.vocab_size, size=(1, c.block_size), dtype=np.int64)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"input_ids": ids}), strict=True))
    with torch.inference_mode():
        ref = model(torch.from_numpy(ids))[0].float()
    return max(float(np.abs(got["logits"] - ref.numpy()).max()),
               float(np.abs(got["lens"][-1] - torch.softmax(ref[0], dim=-1).numpy()).max()))
