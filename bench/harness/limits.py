"""The arithmetic behind "% of the hardware limit": the forward calls of a decode run, the bytes a memory-bound
decoder reads per call, and the FLOPs of a forward pass and a training step. Torch-free."""

from __future__ import annotations

from gpt.decode.loop import restart_length


def decode_calls(prompt_len: int, new_tokens: int, block_size: int) -> list[tuple[int, int]]:
    """(tokens fed, keys attended) of every forward call gpt.decode.loop.generate makes: one prefill, then a
    step per token, and a re-prefill of the last restart_length(block_size) tokens whenever the window overflows."""
    window = min(prompt_len, block_size)
    calls = [(window, window)]
    for _ in range(new_tokens - 1):
        window += 1
        if window > block_size:
            window = restart_length(block_size)
            calls.append((window, window))
        else:
            calls.append((1, window))
    return calls


def average_context(prompt_len: int, new_tokens: int, block_size: int) -> float:
    """Mean number of cached positions a decode call reads (keys attended), over the whole run."""
    calls = decode_calls(prompt_len, new_tokens, block_size)
    return sum(k for _, k in calls) / len(calls)


def kv_bytes(n_layer: int, n_embd: int, context: float, dtype_bytes: int = 4) -> float:
    """Keys + values of every layer for `context` positions of one sequence."""
    return 2 * n_layer * n_embd * context * dtype_bytes


def decode_bytes_per_call(weight_bytes: int, n_layer: int, n_embd: int, batch: int, context: float) -> float:
    """Bytes a memory-bound decoder must read per forward call: the weights once (shared by the whole batch)
    plus each sequence's KV cache at the run's average context."""
    return weight_bytes + batch * kv_bytes(n_layer, n_embd, context)


def memory_bound_tokens_per_s(bytes_per_call: float, batch: int, bandwidth_bytes_s: float) -> float:
    return batch * bandwidth_bytes_s / bytes_per_call


def matmul_params(n_layer: int, n_embd: int, vocab_size: int) -> int:
    """Weights that take part in matmuls per token: 4 linears per block (12·C²) + the vocabulary head."""
    return n_layer * 12 * n_embd * n_embd + vocab_size * n_embd


def forward_flops(n_layer: int, n_embd: int, vocab_size: int, tokens: int, seq_len: int) -> float:
    """Forward FLOPs for `tokens` tokens in sequences of `seq_len`: 2·N per token + causal attention
    (q·kᵀ and p·v, 2·2·T·C per token, halved by the mask)."""
    return 2 * matmul_params(n_layer, n_embd, vocab_size) * tokens + 2 * n_layer * seq_len * n_embd * tokens


def train_flops(n_layer: int, n_embd: int, vocab_size: int, tokens: int, seq_len: int) -> float:
    """Forward + backward = 3 x forward."""
    return 3 * forward_flops(n_layer, n_embd, vocab_size, tokens, seq_len)


def decode_step_flops(n_layer: int, n_embd: int, vocab_size: int, context: float) -> float:
    """FLOPs of one decode step (one token) attending over `context` positions: 2·N for the matmuls + q·kᵀ and
    p·v over the whole context (2·2·context·C per layer, no causal halving: every cached key is read)."""
    return 2 * matmul_params(n_layer, n_embd, vocab_size) + 4 * n_layer * context * n_embd
