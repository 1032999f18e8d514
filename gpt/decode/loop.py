"""One generation loop and one numpy sampler, shared by every backend. Torch-free.

A backend is a `Decoder`: `prefill(ids [B, T]) -> logits [B, V]` for the last position, and
`step(ids [B, 1]) -> logits [B, V]` that appends one token. The loop owns the window policy past
`block_size` (keep the last block_size // 2 tokens and re-prefill them), so every backend sees the same
windows and emits the same greedy text at any length.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np

from gpt.decode.sampler import Sampler
from gpt.errors import GPTError
from gpt.tokenizer import CharTokenizer, UnknownCharacterError

MAX_NEW_TOKENS = 1_000_000
MAX_NUM_SAMPLES = 1024  # one batch; its KV cache grows with it

Window = TypeVar("Window", list[int], np.ndarray)  # what `slide` cuts: a list of ids, or ids on an array's last axis


class Decoder(Protocol):
    vocab: list[str]
    block_size: int

    def prefill(self, ids: np.ndarray) -> np.ndarray: ...

    def step(self, ids: np.ndarray) -> np.ndarray: ...


def encode_prompt(tokenizer: CharTokenizer, prompt: str) -> list[int]:
    """The prompt's ids; an empty prompt starts from a newline (as nanoGPT does)."""
    if prompt == "":
        prompt = "\n" if "\n" in tokenizer.stoi else tokenizer.itos[0]
    try:
        return tokenizer.encode(prompt)
    except UnknownCharacterError as e:
        raise UnknownCharacterError(f"the prompt has {e}; the vocabulary is the {tokenizer.vocab_size} characters "
                                    "of the training text") from None


def prepare_prompt(tokenizer: CharTokenizer, prompt: str, block_size: int) -> list[int]:
    """Encode the prompt (see `encode_prompt`); too long keeps its tail, with a warning."""
    ids = encode_prompt(tokenizer, prompt)
    if len(ids) > block_size:
        print(f"warning: prompt has {len(ids)} characters, more than block_size {block_size}; "
              f"keeping its last {block_size}", file=sys.stderr)
        ids = ids[-block_size:]
    return ids


# The request's lengths and prompt, each checked in one place, named as Python spells them; a CLI checks them
# before its model loads and says its flags (`gpt.errors.flag_names`).

def check_max_new_tokens(n: int) -> None:
    if not 0 <= n <= MAX_NEW_TOKENS:
        raise GPTError(f"max_new_tokens must be in [0, {MAX_NEW_TOKENS:,}], got {n}")


def check_num_samples(n: int) -> None:
    """At most one batch."""
    if not 1 <= n <= MAX_NUM_SAMPLES:
        raise GPTError(f"num_samples must be in [1, {MAX_NUM_SAMPLES}], got {n}; for more, run again with another seed")


def check_prompt_ids(prompt_ids: Sequence[int]) -> None:
    """A prompt of no tokens has no logits to continue from (`encode_prompt` turns an empty prompt into one)."""
    if len(prompt_ids) == 0:
        raise GPTError("the prompt must hold at least one token")


def restart_length(block_size: int) -> int:
    """How many tokens a window keeps when it would pass `block_size`: its last block_size // 2, prefilled again.
    Half a block leaves room for the next half-block of tokens before the next restart, each restart a prefill."""
    return block_size // 2


def slide(window: Window, block_size: int) -> tuple[Window, bool]:
    """The window policy past block_size, the one rule every loop keeps (plain, speculative, the engine's rows, the
    draft model): a window (ids on its last axis) longer than `block_size` is cut to its last
    `restart_length(block_size)` tokens, which the caller prefills again. Returns the window and whether it was cut.
    """
    length = window.shape[-1] if isinstance(window, np.ndarray) else len(window)
    if length <= block_size:
        return window, False
    keep = restart_length(block_size)
    return (window[..., -keep:] if isinstance(window, np.ndarray) else window[-keep:]), True


def generate(decoder: Decoder, prompt_ids: list[int], max_new_tokens: int, sampler: Sampler,
             num_samples: int = 1, on_token: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """Decode `num_samples` continuations of the prompt as one batch; returns new token ids [B, N]."""
    check_max_new_tokens(max_new_tokens)
    check_num_samples(num_samples)
    check_prompt_ids(prompt_ids)
    block = decoder.block_size
    window = np.tile(np.asarray(prompt_ids[-block:], dtype=np.int64), (num_samples, 1))
    out = np.zeros((num_samples, max_new_tokens), dtype=np.int64)
    if max_new_tokens == 0:
        return out
    # A decoder whose graph samples (gpt.decode.sampler_graph) takes the step's draws and returns its tokens: the
    # same draws, spent in the same order, as sampling its logits here.
    in_graph = isinstance(sampler, Sampler) and sampler.params.plain
    sampled_step = getattr(decoder, "step_sampled", None) if in_graph else None
    token = sampler(decoder.prefill(window)).astype(np.int64)
    for i in range(max_new_tokens):
        out[:, i] = token
        if on_token is not None:
            on_token(token)
        if i == max_new_tokens - 1:
            break
        window, restarted = slide(np.concatenate([window, token[:, None]], axis=1), block)
        if restarted:
            token = sampler(decoder.prefill(window)).astype(np.int64)
        elif sampled_step is not None:
            token = sampled_step(token[:, None], sampler.rows(num_samples)[0], sampler.uniforms.draw(num_samples))
        else:
            token = sampler(decoder.step(token[:, None])).astype(np.int64)
    return out


class _Recorder:
    """A decoder that keeps every logits array the one it wraps returns."""

    def __init__(self, decoder: Decoder):
        self.decoder, self.vocab, self.block_size, self.logits = decoder, decoder.vocab, decoder.block_size, []

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        self.logits.append(self.decoder.prefill(ids))
        return self.logits[-1]

    def step(self, ids: np.ndarray) -> np.ndarray:
        self.logits.append(self.decoder.step(ids))
        return self.logits[-1]


def forced_logits(decoder: Decoder, prompt_ids: list[int], tokens: list[int]) -> list[np.ndarray]:
    """The logits `decoder` returns at each step of `generate` when the new tokens are `tokens`, given in
    advance rather than sampled (teacher forcing): every backend then sees the same ids through the same
    prefill/step/re-prefill calls, so their logits compare step by step (the parity tests and bench checks)."""
    script = iter(tokens)
    recorder = _Recorder(decoder)
    generate(recorder, prompt_ids, len(tokens), lambda logits: np.full(logits.shape[0], next(script)))
    return recorder.logits
