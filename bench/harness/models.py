"""The models every backend is timed on: per preset, one random-initialised checkpoint and its ONNX files (the
gqa default, its int8 / int4 quantizations, the portable `onnx` layout, genai_config.json), and the decoder of
each backend over them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.harness.genai import genai_block_size, open_genai
from bench.harness.plan import SMOKE_PRESET
from gpt.decode.loop import Decoder, restart_length

if TYPE_CHECKING:
    from gpt.config import ModelConfig

# Tiny Shakespeare's 65 characters: the vocabulary the presets are sized for.
VOCAB = list("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
PROMPT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak."
# ONNX file per kind: the gqa export and its quantizations, and the portable layout.
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "int4": "model.int4.onnx", "onnx-fp32": "std.onnx"}


def model_config(preset: str) -> ModelConfig:
    from gpt.config import ModelConfig, get_preset

    if preset == SMOKE_PRESET:
        return ModelConfig(vocab_size=len(VOCAB), block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    cfg = get_preset(preset).model
    cfg.vocab_size = len(VOCAB)
    return cfg


def prompt_ids(n: int) -> list[int]:
    stoi = {c: i for i, c in enumerate(VOCAB)}
    return [stoi[c] for c in (PROMPT * (n // len(PROMPT) + 1))[:n]]


class Artifacts:
    """A random-initialised checkpoint of the preset and its ONNX files, written with export.onnx's own code."""

    def __init__(self, preset: str, root: Path):
        import torch

        from export.genai import write_genai_config
        from export.graph import add_metadata, export_proto, serialize
        from export.quantize import SCHEMES, quantize
        from gpt.fsutil import atomic_write_bytes
        from gpt.model import GPT
        from gpt.model.checkpoint import save_checkpoint
        from gpt.tokenizer import CharTokenizer

        self.preset, self.dir = preset, root
        self.config = model_config(preset)
        torch.manual_seed(0)
        model = GPT(self.config).eval()
        tokenizer = CharTokenizer(VOCAB)
        save_checkpoint(root, model, tokenizer, note="random weights for benchmarks")
        self.onnx = {kind: root / name for kind, name in ONNX_FILES.items()}
        start = time.perf_counter()
        for kind, attention in (("fp32", "gqa"), ("onnx-fp32", "onnx")):
            proto = export_proto(model, attention=attention)
            add_metadata(proto, tokenizer, model, None, attention)
            atomic_write_bytes(self.onnx[kind], serialize(proto))
            del proto
        for kind in ("int8", "int4"):
            quantize(self.onnx["fp32"], self.onnx[kind], SCHEMES[kind])
        write_genai_config(self.onnx["fp32"], self.config)
        self.export_s = time.perf_counter() - start
        self.num_params = model.num_params()
        # Bytes a decode step reads: every weight except the position table (one row per token); the token
        # table counts once, as the (tied) vocabulary head reads all of it.
        self.torch_weight_bytes = 4 * (self.num_params - model.wpe.weight.numel())
        self.onnx_weight_bytes = {k: onnx_weight_bytes(p) for k, p in self.onnx.items()}

    def weight_bytes(self, backend: str) -> int:
        if backend.startswith("ort-"):
            return self.onnx_weight_bytes[backend.removeprefix("ort-")]
        if backend.startswith("genai-"):
            return self.onnx_weight_bytes["fp32"]
        return self.torch_weight_bytes


def onnx_weight_bytes(path: Path) -> int:
    """Initializer bytes read by a forward pass: all of them, except tables only ever Gather-ed (one row)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    return sum(numpy_helper.to_array(t).nbytes for t in graph.initializer if consumers.get(t.name) != {"Gather"})


class GenaiLoop:
    """onnxruntime-genai's own generation loop (C++ greedy search, no Python per token) on our file, with our
    window policy done from outside: generate until block_size, keep the last restart_length(block_size) tokens, rewind,
    append them, go on. `generate` has gpt.decode.loop.generate's signature, for batch 1. Its search would stop a
    row at the end-of-text token, which a character model lacks: `min_length` keeps it going (that token's
    logit is masked, so its greedy text may differ from ours; only its speed is compared)."""

    def __init__(self, path: Path, threads: int):
        self.og, self.model = open_genai(path, threads)
        self.block_size = genai_block_size(path)

    def generate(self, prompt: list[int], new_tokens: int) -> np.ndarray:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=self.block_size, min_length=self.block_size, do_sample=False)
        generator = self.og.Generator(self.model, params)
        window = np.asarray([prompt[-self.block_size:]], dtype=np.int32)
        out: list[int] = []
        while True:
            generator.append_tokens(window)
            while not generator.is_done() and len(out) < new_tokens:
                generator.generate_next_token()
                out.append(int(generator.get_next_tokens()[0]))
            if len(out) == new_tokens:
                return np.asarray([out], dtype=np.int64)
            window = generator.get_sequence(0)[-restart_length(self.block_size):].astype(np.int32)[None]
            generator.rewind_to(0)


def open_backend(a: Artifacts, backend: str, threads: int) -> Decoder | GenaiLoop:
    """The decoder a benchmark times for `backend` (a GenaiLoop for onnxruntime-genai's own loop)."""
    from gpt.decode.backends import open_decoder

    if backend == "genai-loop":
        return GenaiLoop(a.onnx["fp32"], threads)
    if backend == "genai-fp32":
        return open_decoder("onnxruntime-genai", a.onnx["fp32"], threads=threads)
    if backend.startswith("ort-"):
        return open_decoder("onnxruntime", a.onnx[backend.removeprefix("ort-")], threads=threads)
    return open_decoder("torch", a.dir, use_cache=backend != "eager-nocache", compile=backend == "compiled-kv",
                        threads=threads)
