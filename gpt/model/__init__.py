"""The network and what it is stored in (torch).

network.py is the GPT (embeddings, blocks, head); attention.py its attention backends (naive | sdpa | triton);
kv_cache.py the caches for decoding and export; checkpoint.py model.safetensors + config.json; nanogpt.py and
safe_pickle.py read nanoGPT's files; device.py is the one CUDA check.
"""

from gpt.model.network import GPT

__all__ = ["GPT"]
