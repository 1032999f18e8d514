"""Speculative decoding: draft a few characters cheaply, verify them all in ONE run of the model, keep the
longest prefix the model agrees with, plus the model's own next character. Torch-free.

At batch 1 a decode step is one pass over the weights and ~70 small onnxruntime ops for one character; a run
that appends k + 1 tokens to the in-place cache costs little more (1.16x one step for k = 4 on the demo model,
`../shared/probes/speculative_cpu.py`), so every accepted draft is a character almost for free. Rolling a
rejected draft back costs nothing: the next run starts at the last accepted position, so the stale keys and
values past it are never read and are overwritten later.

The accept rule keeps the text exactly the model's:
  greedy    a draft is accepted where it is the argmax: the text of plain greedy decoding, at any length.
  sampling  a draft x drawn from q is accepted with probability min(1, p(x) / q(x)); on rejection the next
            character is drawn from normalize(max(0, p - q)); after k accepted drafts, from p. (Leviathan et
            al. 2023; Chen et al. 2023.) A deterministic draft has q one-hot. p is the model's distribution
            after temperature, top-k and top-p, so the text has exactly the distribution of plain sampling.

The loop keeps `gpt.generate`'s window policy (past block_size, keep the last block_size // 2 tokens and
re-prefill them): drafts never run past block_size, so every position sees the window plain decoding gives it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from gpt.errors import GPTError
from gpt.generate import MAX_NEW_TOKENS
from gpt.sampler import SamplingParams, filter_logits, softmax

DEFAULT_DRAFT_TOKENS = 4  # measured: see README (speculative decoding); the drafter may stop earlier


@dataclass
class Draft:
    """Drafted ids; `q[j]` is the distribution `tokens[j]` was drawn from (None: chosen deterministically)."""

    tokens: list[int]
    q: np.ndarray | None = None


class Drafter(Protocol):
    """Proposes up to `k` ids to follow `history` (the prompt and every id since, unwindowed)."""

    def propose(self, history: Sequence[int], k: int, params: SamplingParams, rng: np.random.Generator) -> Draft: ...


class Verifier(Protocol):
    """A model with a KV cache of one row: `run(ids, start)` writes `ids` at positions start.. (what the cache
    held past `start` is dropped) and returns the logits after each of them [len(ids), V]; start 0 prefills."""

    vocab: list[str]
    block_size: int

    def run(self, ids: Sequence[int], start: int) -> np.ndarray: ...


@dataclass
class SpeculativeStats:
    """What the drafts earned: per verify run, how many drafts it checked and how many it accepted."""

    proposed: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)

    def record(self, proposed: int, accepted: int) -> None:
        self.proposed.append(proposed)
        self.accepted.append(accepted)

    @property
    def runs(self) -> int:
        return len(self.accepted)

    def histogram(self) -> dict[int, int]:
        """Verify runs by drafts accepted."""
        counts: dict[int, int] = {}
        for a in self.accepted:
            counts[a] = counts.get(a, 0) + 1
        return dict(sorted(counts.items()))

    def summary(self) -> str:
        if not self.runs:
            return "speculative: no verify runs"
        acc, prop = sum(self.accepted), sum(self.proposed)
        bars = ", ".join(f"{a}: {n}" for a, n in self.histogram().items())
        return (f"speculative: {self.runs} runs of the model, {(acc + self.runs) / self.runs:.2f} characters per "
                f"run; drafts accepted {acc} of {prop} ({acc / max(prop, 1):.0%}); runs by drafts accepted: {bars}")


def probabilities(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The distribution `gpt.sampler.sample_tokens` draws from, per row of `logits` [N, V] (temperature > 0)."""
    x = np.asarray(logits, dtype=np.float64)
    scaled = (x - x.max(axis=-1, keepdims=True)) / params.temperature
    return softmax(filter_logits(scaled, params.top_k, params.top_p))


def draw(p: np.ndarray, u: float) -> int:
    """The inverse CDF of `p` at `u` in [0, 1), as `sample_tokens` does it."""
    cdf = np.cumsum(p)
    return int(min((cdf <= u * cdf[-1]).sum(), len(p) - 1))


def accept_drafts(rows: np.ndarray, draft: Draft, params: SamplingParams,
                  rng: np.random.Generator) -> tuple[int, np.ndarray | None]:
    """How many of `draft.tokens` the model keeps, given its logits `rows` [k + 1, V] (row j: after the first j
    drafts); and, for sampling, the distribution the next character is drawn from (None: greedy)."""
    k = len(draft.tokens)
    if params.temperature == 0:
        best = np.argmax(rows[:k], axis=-1)
        agree = best == np.asarray(draft.tokens, dtype=np.int64)
        n = k if agree.all() else int(np.argmin(agree))
        return n, None
    p = probabilities(rows[:k + 1], params)
    for j, x in enumerate(draft.tokens):
        q = draft.q[j] if draft.q is not None else None
        qx = 1.0 if q is None else float(q[x])
        if rng.random() < min(1.0, p[j, x] / qx):
            continue
        if q is None:
            residual = p[j].copy()
            residual[x] = 0.0
        else:
            residual = np.maximum(p[j] - q, 0.0)
        return j, residual if residual.sum() > 0 else p[j]
    return k, p[k]


def generate_speculative(model: Verifier, prompt_ids: list[int], max_new_tokens: int, params: SamplingParams,
                         drafter: Drafter, draft_tokens: int = DEFAULT_DRAFT_TOKENS,
                         on_token: Callable[[int, bool], None] | None = None,
                         stats: SpeculativeStats | None = None) -> list[int]:
    """Decode one continuation of the prompt with drafts; returns the new ids. `on_token(id, drafted)` sees each
    id as it is kept (`drafted`: it came from an accepted draft)."""
    block = model.block_size
    check_draft_tokens(draft_tokens, block)
    if not 0 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise GPTError(f"--max-new-tokens must be in [0, {MAX_NEW_TOKENS:,}], got {max_new_tokens}")
    if not prompt_ids:
        raise GPTError("the prompt must hold at least one token")
    rng = np.random.default_rng(params.seed)
    history = list(prompt_ids)
    window = list(prompt_ids[-block:])
    out: list[int] = []
    if max_new_tokens == 0:
        return out
    next_logits = model.run(window, 0)[-1]
    next_p: np.ndarray | None = None  # after a rejected draft: the residual to draw from
    while True:
        if params.temperature == 0:
            token = int(np.argmax(next_logits))
        else:
            p = next_p if next_p is not None else probabilities(next_logits[None], params)[0]
            token = draw(p, rng.random())
        keep(token, False, out, history, on_token)
        if len(out) == max_new_tokens:
            return out
        window.append(token)
        start = len(window) - 1  # the position of `token`: the cache holds every position before it
        if len(window) > block:
            window, start = window[-(block // 2):], 0
        room = min(draft_tokens, block - len(window), max_new_tokens - len(out) - 1)
        draft = drafter.propose(history, room, params, rng) if room > 0 else Draft([])
        rows = model.run(window[start:] + draft.tokens, start)[-(len(draft.tokens) + 1):]
        n, next_p = accept_drafts(rows, draft, params, rng)
        if stats is not None:
            stats.record(len(draft.tokens), n)
        for t in draft.tokens[:n]:
            keep(t, True, out, history, on_token)
            window.append(t)
            if len(out) == max_new_tokens:
                return out
        next_logits = rows[n]


def keep(token: int, drafted: bool, out: list[int], history: list[int],
         on_token: Callable[[int, bool], None] | None) -> None:
    out.append(token)
    history.append(token)
    if on_token is not None:
        on_token(token, drafted)


def check_draft_tokens(k: int, block_size: int) -> None:
    """The one validator of a draft length: 1 .. block_size // 2 (a window restarts at block_size // 2)."""
    if not 1 <= k <= block_size // 2:
        raise GPTError(f"--draft-tokens must be in [1, {block_size // 2}] (block_size {block_size} / 2), got {k}")
