"""`genai_config.json`: the same gqa file, run by the pip package onnxruntime-genai (its C++ generator loop).

onnxruntime-genai's decoder-only model feeds `input_ids`, `attention_mask` and `past_key_values.{i}.*` and,
with `past_present_share_buffer`, binds each past and present to one buffer of `max_length` positions:
exactly the gqa layout's contract. Our positions come from `attention_mask` inside the graph, so no
`position_ids` input is needed. Its `max_length` is block_size: it does not slide the window past it.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpt.config import ModelConfig
from gpt.fsutil import atomic_write_text

CONFIG = "genai_config.json"


def genai_config(onnx_name: str, c: ModelConfig) -> dict:
    return {
        "model": {
            "type": "llama",  # any decoder-only type: the graph, not the type, defines the computation
            "vocab_size": c.vocab_size,
            "context_length": c.block_size,
            "bos_token_id": 0,
            # onnxruntime-genai zeroes the attention mask of every prompt position whose id is pad_token_id, so
            # it must be no character's id (any id would mask that character); an end token must be a valid id,
            # and a character model has none: the last character stands in (runs that must not stop early set
            # min_length, and our own decoders never use onnxruntime-genai's search).
            "eos_token_id": [c.vocab_size - 1],
            "pad_token_id": c.vocab_size,
            "decoder": {
                "filename": onnx_name,
                "head_size": c.head_dim,
                "hidden_size": c.n_embd,
                "num_attention_heads": c.n_head,
                "num_key_value_heads": c.n_head,
                "num_hidden_layers": c.n_layer,
                "session_options": {"log_id": "gpt", "provider_options": []},
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
            },
        },
        "search": {
            "max_length": c.block_size,
            "past_present_share_buffer": True,
            "do_sample": False,
            "num_beams": 1,
            "top_k": 1,
            "top_p": 1.0,
            "temperature": 1.0,
        },
    }


def write_genai_config(onnx_path: Path, c: ModelConfig) -> Path:
    path = Path(onnx_path).with_name(CONFIG)
    atomic_write_text(path, json.dumps(genai_config(Path(onnx_path).name, c), indent=2))
    return path
