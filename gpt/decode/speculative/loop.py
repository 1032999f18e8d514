"""Speculative decoding: draft a few characters cheaply, verify them all in ONE run of the model, keep the
longest prefix the model agrees with, plus the model's own next character. Torch-free.

At batch 1 a decode step is one pass over the weights and ~70 small onnxruntime ops for one character; a run
that appends k + 1 tokens to the in-place cache costs little more (1.16x one step for k = 4 on the demo model,
`../shared/probes/speculative_cpu.py`), so every accepted draft is a character almost for free. Rolling a
rejected draft back costs nothing: the next run starts at the last accepted position, so the stale keys and
values past it are never read and are overwritten later.

The accept rule keeps the text exactly the model's. At each drafted position the model's own token is what plain
decoding would pick there: the argmax (greedy), or the inverse CDF of its distribution after temperature, top-k
and top-p at that position's random draw (the request's RNG gives one draw per token, in order, exactly as
plain sampling spends them). A draft is kept while it equals that token; at the first that differs, the model's
token is kept instead. For a deterministic draft x this is the standard rule with q one-hot (accept with
probability min(1, p(x)/q(x)) = p(x), on rejection draw from normalize(max(0, p - q)) = p without x), realised
with one shared draw: the text is not only distributed as the model's, it is the very text plain decoding
writes for the same seed, greedy or sampled. A drafter that samples (the draft model) draws with the same
numbers, so its guesses are coupled to the model's and agree where the two distributions do.

The loop keeps `gpt.decode.loop`'s window policy (`slide`: past block_size, keep the last block_size // 2 tokens and
re-prefill them): drafts never run past block_size, so every position sees the window plain decoding gives it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from gpt.decode.loop import check_max_new_tokens, check_prompt_ids, restart_length, slide
from gpt.decode.sampler import SamplingParams, Uniforms, sample_tokens
from gpt.errors import GPTError

DEFAULT_DRAFT_TOKENS = 4  # measured: docs/speculative.md; the drafter may stop earlier


class Drafter(Protocol):
    """Proposes up to `k` ids to follow `history` (the prompt and every id since, unwindowed); `uniforms[j]` is the
    random draw the sampler will spend on the j-th of them (a drafter that samples uses it; greedy: ignore it)."""

    def propose(self, history: Sequence[int], k: int, params: SamplingParams, uniforms: np.ndarray) -> list[int]: ...


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


class Pacer:
    """Drafts only while drafting pays on this machine and this text: it times every round (draft, verify run,
    accept), with drafts and without (a round whose drafter was unsure, or a probe), and drafts nothing while a
    plain round costs less per character kept. Every PROBE-th round tries the other way, so it follows the text
    as it changes. What a verify run of k tokens costs beside a step differs between CPUs (1.16x to 1.9x for
    k = 4 on the machines measured): no fixed threshold would suit them all.

    A way's cost is its recent seconds over its recent characters (sums that decay by WEIGHT a round), not the
    mean of each round's seconds per character: a drafting round keeps 1 to k + 1 characters for about the same
    time, and the mean of the ratios weighs its unlucky rounds k + 1 times as much as its lucky ones (measured:
    1.41x against 1.84x always drafting, T = 0.8 on the demo model, 2-core Intel Xeon)."""

    PROBE = 16
    WEIGHT = 0.2  # of the newest round in each way's sums

    def __init__(self, adaptive: bool = True) -> None:
        self.adaptive, self.rounds = adaptive, 0
        self.sums: dict[bool, tuple[float, float]] = {}  # drafted -> (seconds, characters kept), decayed

    def cost(self, drafted: bool) -> float | None:
        """Seconds per character kept, recently, drafting or not (None before the first such round)."""
        found = self.sums.get(drafted)
        return None if found is None else found[0] / found[1]

    def drafts(self, room: int) -> int:
        """How many drafts to ask for this round: `room` or 0 (always `room` when not adaptive)."""
        self.rounds += 1
        if room == 0 or not self.adaptive:
            return room
        with_drafts, without = self.cost(True), self.cost(False)
        speculate = with_drafts is None or without is None or with_drafts <= without
        if self.rounds % self.PROBE == 0:
            speculate = not speculate
        return room if speculate else 0

    def record(self, drafted: bool, kept: int, seconds: float) -> None:
        old_seconds, old_kept = self.sums.get(drafted, (0.0, 0.0))
        keep = 1.0 - self.WEIGHT
        self.sums[drafted] = (old_seconds * keep + seconds, old_kept * keep + kept)


def model_tokens(rows: np.ndarray, params: SamplingParams, uniforms: np.ndarray) -> np.ndarray:
    """The token plain decoding picks after each row of logits [N, V], row j with draw uniforms[j]."""
    n = len(rows)
    return sample_tokens(rows, np.full(n, params.temperature), np.full(n, params.top_k), np.full(n, params.top_p),
                         uniforms[:n])


def accept_drafts(rows: np.ndarray, draft: Sequence[int], params: SamplingParams,
                  uniforms: np.ndarray) -> tuple[int, int]:
    """(n, t): the model keeps the first n drafts, then its own token t; `rows` [len(draft) + 1, V] are its logits
    after the token before the draft and after each draft; n + 1 draws are spent."""
    return accept_tokens(model_tokens(rows, params, uniforms), draft)


def accept_tokens(tokens: np.ndarray, draft: Sequence[int]) -> tuple[int, int]:
    """`accept_drafts` given the model's own tokens [len(draft) + 1] (sampled by the verify run itself, where the
    graph samples: `Verifier.run_sampled`)."""
    agree = tokens[:len(draft)] == np.asarray(draft, dtype=np.int64)
    n = len(draft) if agree.all() else int(np.argmin(agree))
    return n, int(tokens[n])


def verify(model: Verifier, ids: list[int], start: int, draft: list[int], params: SamplingParams,
           uniforms: np.ndarray) -> tuple[int, int]:
    """One verify run of `ids` (ending in the draft) written at `start`, then `accept_drafts` with its draws
    `uniforms` [len(draft) + 1]. A model whose graph samples (`sampling`, gpt.decode.sampler_graph) returns its
    tokens from the run when sampling is plain; the positions before the draft's need no draw."""
    k = len(draft) + 1
    if getattr(model, "sampling", False) and params.plain:
        draws = np.zeros(len(ids))
        draws[-k:] = uniforms
        return accept_tokens(model.run_sampled(ids, start, params.temperature, draws)[-k:], draft)
    return accept_drafts(model.run(ids, start)[-k:], draft, params, uniforms)


def generate_speculative(model: Verifier, prompt_ids: list[int], max_new_tokens: int, params: SamplingParams,
                         drafter: Drafter, draft_tokens: int = DEFAULT_DRAFT_TOKENS,
                         on_token: Callable[[int, bool], None] | None = None,
                         stats: SpeculativeStats | None = None, pacer: Pacer | None = None) -> list[int]:
    """Decode one continuation of the prompt with drafts: the ids plain decoding (`gpt.decode.loop` with
    `Sampler(params)`) writes. `on_token(id, drafted)` sees each id as it is kept (`drafted`: an accepted draft);
    `pacer` decides when to draft (default: `Pacer()`, only while it pays)."""
    block = model.block_size
    check_draft_tokens(draft_tokens, block)
    check_max_new_tokens(max_new_tokens)
    check_prompt_ids(prompt_ids)
    uniforms = Uniforms(np.random.default_rng(params.seed), params.temperature == 0)
    pacer = pacer or Pacer()
    history = list(prompt_ids)
    window = list(prompt_ids[-block:])
    out: list[int] = []
    if max_new_tokens == 0:
        return out
    token = int(model_tokens(model.run(window, 0)[-1:], params, uniforms.peek(1))[0])
    uniforms.take(1)
    while True:
        keep(token, False, out, history, on_token)
        if len(out) == max_new_tokens:
            return out
        window.append(token)
        window, restarted = slide(window, block)
        start = 0 if restarted else len(window) - 1  # the position of `token`: the cache holds all before it
        began = time.perf_counter()
        room = pacer.drafts(min(draft_tokens, block - len(window), max_new_tokens - len(out) - 1))
        draft = drafter.propose(history, room, params, uniforms.peek(room)) if room > 0 else []
        n, token = verify(model, window[start:] + draft, start, draft, params, uniforms.peek(len(draft) + 1))
        uniforms.take(n + 1)
        pacer.record(bool(draft), n + 1, time.perf_counter() - began)
        if stats is not None:
            stats.record(len(draft), n)
        for t in draft[:n]:
            keep(t, True, out, history, on_token)
            window.append(t)
            if len(out) == max_new_tokens:
                return out


def keep(token: int, drafted: bool, out: list[int], history: list[int],
         on_token: Callable[[int, bool], None] | None) -> None:
    out.append(token)
    history.append(token)
    if on_token is not None:
        on_token(token, drafted)


def check_draft_tokens(k: int, block_size: int, off: bool = False) -> None:
    """The one validator of a draft length: 1 .. restart_length(block_size) (a window restarts there, so a longer
    draft could never fit); with `off`, 0 too (a request that turns speculation off). A CLI says its flag
    (`gpt.errors.flag_names`)."""
    low, high = (0 if off else 1), restart_length(block_size)
    if not low <= k <= high:
        zero = ", 0 = off" if off else ""
        raise GPTError(f"draft_tokens must be in [{low}, {high}] (block_size {block_size} / 2{zero}), got {k}")
