"""Our GPT as transformers' `GPT2LMHeadModel`: its config.json and its safetensors state dict.

The architectures are the same (pre-LN blocks, learned positions, tied head, LayerNorm eps 1e-5, 1/sqrt(d)
attention scale); what differs is storage: GPT-2 keeps its projections as `Conv1D` ([in, out], the transpose
of our `nn.Linear` weights), always has biases (zeros where a bias=False model has none), names everything
under `transformer.`, and stores the tied head once (as `transformer.wte.weight`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from gpt.config import ModelConfig
from gpt.model import GPT

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
TIED = "lm_head.weight"


def gpt2_config(c: ModelConfig) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,  # 4 * n_embd
        "activation_function": "gelu",  # exact (erf) GELU, torch.nn.GELU(); GPT-2's own "gelu_new" is tanh's
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": 0.0,  # we never drop attention probabilities
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": None,  # a character vocabulary has no special tokens (GPT-2's 50256 would not exist)
        "eos_token_id": None,
        "dtype": "float32",
    }


def gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    ours = {k: v.detach().cpu() for k, v in model.state_dict().items() if k != TIED}
    with torch.device("meta"):  # the names and shapes of the same model with every bias
        full = {k: v.shape for k, v in GPT(replace(model.config, bias=True)).state_dict().items() if k != TIED}
    tensors = {}
    for name, shape in full.items():
        t = ours.get(name, torch.zeros(shape))
        tensors["transformer." + name] = (t.t() if name.endswith(CONV1D) else t).float().contiguous()
    return tensors
