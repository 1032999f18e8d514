"""One numpy sampler for every backend and the engine: temperature, top-k, top-p, per row. Torch-free.

`sample_tokens` takes one row of parameters per row of logits, so the continuous-batching engine samples
requests with different settings in one call, each with a uniform draw from its own RNG; `Sampler` is the
same function for a batch that shares one setting and one RNG (`gpt.sample`). Every operation is row-wise,
so a row's token does not depend on the other rows of its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from gpt.errors import GPTError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 1337

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise GPTError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise GPTError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise GPTError(f"top_p must be in (0, 1], got {self.top_p}")

    @cached_property  # once per request: the engine asks every row at every step
    def plain(self) -> bool:
        """Sampling from the whole tempered distribution (temperature > 0, no top-k, no top-p): what the graph's own
        sampler computes (`gpt.decode.sampler_graph`)."""
        return _plain_row(self.temperature, self.top_k, self.top_p)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def filter_logits(logits: np.ndarray, top_k: int | np.ndarray = 0, top_p: float | np.ndarray = 1.0) -> np.ndarray:
    """Set to -inf every logit outside the top-k and outside the smallest set whose probability >= top_p.

    `top_k` / `top_p` are one number for every row or one per row (0 / 1.0 = off for that row)."""
    rows = logits.shape[:-1]
    V = logits.shape[-1]
    top_k = np.broadcast_to(np.asarray(top_k, dtype=np.int64), rows)
    top_p = np.broadcast_to(np.asarray(top_p, dtype=np.float64), rows)
    use_k = (top_k > 0) & (top_k < V)
    use_p = top_p < 1.0
    if not use_k.any() and not use_p.any():
        return logits
    logits = np.array(logits, dtype=np.float64)
    if use_k.any():
        order = np.argsort(-logits, axis=-1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(V), order.shape), axis=-1)
        drop = use_k[..., None] & (rank >= top_k[..., None])  # exactly k, even with ties
        logits = np.where(drop, -np.inf, logits)
    if use_p.any():
        order = np.argsort(-logits, axis=-1, kind="stable")
        probs = softmax(np.take_along_axis(logits, order, axis=-1))
        before = np.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above each one
        drop_sorted = use_p[..., None] & (before >= top_p[..., None])
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        logits = np.where(drop, -np.inf, logits)
    return logits


def sample_tokens(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray, top_p: np.ndarray,
                  uniform: np.ndarray) -> np.ndarray:
    """One token per row of `logits` [B, V]: argmax where temperature is 0, otherwise the inverse CDF at
    `uniform` (draws in [0, 1), one per row) of the row's filtered, tempered distribution."""
    temperature = np.asarray(temperature, dtype=np.float64)
    if temperature.shape == (1,) and _plain_row(float(temperature[0]), top_k, top_p):
        return _sample_plain_row(logits, float(temperature[0]), uniform)
    if _plain(temperature, top_k, top_p):
        return _sample_plain(logits, temperature, uniform)
    logits = np.asarray(logits, dtype=np.float64)
    greedy = temperature == 0
    tokens = np.argmax(logits, axis=-1)
    if greedy.all():
        return tokens
    t = np.where(greedy, 1.0, temperature)[:, None]
    scaled = (logits - logits.max(axis=-1, keepdims=True)) / t  # max stays 0, even as T -> 0
    cdf = np.cumsum(softmax(filter_logits(scaled, top_k, top_p)), axis=-1)
    u = np.asarray(uniform, dtype=np.float64) * cdf[:, -1]
    sampled = np.minimum((cdf <= u[:, None]).sum(axis=-1), cdf.shape[-1] - 1)
    return np.where(greedy, tokens, sampled)


def _plain(temperature: np.ndarray, top_k, top_p) -> bool:
    """Every row samples (temperature > 0) from its whole distribution (no top-k, no top-p): the common case,
    which `_sample_plain` serves with a dozen numpy calls instead of ~40 (22.7 -> 10 us at batch 1, V=65)."""
    return bool(temperature.min() > 0) and int(np.asarray(top_k).max()) <= 0 and float(np.asarray(top_p).min()) >= 1.0


def _sample_plain(logits: np.ndarray, temperature: np.ndarray, uniform) -> np.ndarray:
    """`sample_tokens` for rows that all sample with no filter: the same float64 operations in the same order
    (so the same tokens), in place. The max of each scaled row is exactly 0, so softmax's own shift is skipped."""
    x = np.asarray(logits).astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    x /= temperature[:, None]
    np.exp(x, out=x)
    x /= x.sum(axis=-1, keepdims=True)
    cdf = np.add.accumulate(x, axis=-1)  # np.cumsum, without its wrapper
    u = np.asarray(uniform, dtype=np.float64) * cdf[:, -1]
    sampled = (cdf <= u[:, None]).sum(axis=-1)
    return np.minimum(sampled, cdf.shape[-1] - 1, out=sampled)


def _plain_row(temperature: float, top_k, top_p) -> bool:
    """`_plain` for one row, on Python numbers (its three array reductions are a fifth of a batch-1 draw)."""
    return temperature > 0 and int(np.asarray(top_k).flat[0]) <= 0 and float(np.asarray(top_p).flat[0]) >= 1.0


def _sample_plain_row(logits: np.ndarray, temperature: float, uniform) -> np.ndarray:
    """`_sample_plain` for batch 1 (every decode step of one text): the same float64 operations on the one row
    (a row's max, sum and running sum are the same numbers with or without the batch axis), without the
    broadcasting that costs more than the arithmetic on 65 numbers. The count of the running sum's entries
    <= u * total is `searchsorted(..., side="right")` on it (a running sum of non-negative numbers never
    decreases): one call instead of a comparison and a sum."""
    row = np.asarray(logits).reshape(-1)
    x = np.subtract(row, row.max(), dtype=np.float64)  # = row.astype(float64) - its max: the max is exact in both
    x /= temperature
    np.exp(x, out=x)
    x /= x.sum()
    cdf = np.add.accumulate(x)
    sampled = int(cdf.searchsorted(float(np.asarray(uniform).flat[0]) * cdf[-1], side="right"))
    return np.array([min(sampled, cdf.shape[0] - 1)])


class Uniforms:
    """A text's random draws in [0, 1), one per sampled token in order (none for greedy): what `Sampler`, the
    engine and speculative decoding spend. Drawn from the generator a block at a time (`rng.random(n)` gives
    the very numbers n calls of `rng.random()` would; a draw a token costs 2-6 µs, a fifth of a sampled
    character's Python); a drafter may `peek` ahead, and only what is `take`n is spent."""

    BLOCK = 256

    def __init__(self, rng: np.random.Generator, greedy: bool):
        self.rng, self.greedy = rng, greedy
        self.buffer, self.at = np.zeros(0), 0

    def peek(self, n: int) -> np.ndarray:
        if self.greedy:
            return np.zeros(n)
        if self.at + n > len(self.buffer):
            self.buffer = np.concatenate([self.buffer[self.at:], self.rng.random(max(n, self.BLOCK))])
            self.at = 0
        return self.buffer[self.at:self.at + n]

    def take(self, n: int) -> None:
        if not self.greedy:
            self.peek(n)
            self.at += n

    def draw(self, n: int) -> np.ndarray:
        """The next n draws, spent (`peek` then `take`, in one)."""
        drawn = self.peek(n)
        if not self.greedy:
            self.at += n
        return drawn


def next_draws(streams: list[Uniforms]) -> np.ndarray:
    """One draw from each row's own stream, spent (the engine's rows); one row's is its buffer's view, not a new
    array (a decode step at batch 1 is ~450 µs: the array and list a row would cost are a percent of it)."""
    if len(streams) == 1:
        return streams[0].draw(1)
    return np.array([s.draw(1)[0] for s in streams])


class Sampler:
    """A batch with one setting and one seeded numpy Generator; temperature 0 is argmax (and draws nothing).
    Row b of a step spends the step's b-th draw, as `Generator.random(B)` would give them."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.uniforms = Uniforms(np.random.default_rng(params.seed), params.temperature == 0)
        self._rows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # B -> the settings per row

    def rows(self, B: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The setting per row of a batch of B: temperature, top_k, top_p."""
        rows = self._rows.get(B)
        if rows is None:
            p = self.params
            rows = self._rows[B] = (np.full(B, p.temperature), np.full(B, p.top_k), np.full(B, p.top_p))
        return rows

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        if self.params.temperature == 0:
            return np.argmax(logits, axis=-1)
        B = logits.shape[0]
        return sample_tokens(logits, *self.rows(B), self.uniforms.draw(B))
