"""The `ngram` drafter: continue the longest suffix of the text so far that occurs in the training text or earlier
in the text itself. Torch-free (numpy only); it costs no model run.

Two sources, as llama.cpp's ngram cache and vLLM's prompt lookup do it:
  training text  a suffix array over the training split (`NgramIndex`, built once and saved beside the model as
                 `ngram.npz` with the text's sha256): the suffixes that start with the context's longest
                 matching suffix are one contiguous range of it, the characters that follow them are sorted
                 within it, so the drafted character is their most common one and the next range is a sub-range.
  the text so far (prompt + generated): the latest earlier occurrence of its longest repeated suffix, copied on.
The longer match wins (the text so far on a tie: it is the more recent). Drafting stops early where the
drafter is unsure (`min_share`: the most common next character follows fewer than that share of the
occurrences; `min_match`: the match is shorter than that), so a hard stretch costs a plain step.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import time
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gpt.decode.sampler import SamplingParams
from gpt.decode.speculative.training_text import encode_text, load_npz, save_npz
from gpt.errors import GPTError

INDEX_FILE = "ngram.npz"
INDEX_VERSION = 1
MAX_MATCH = 32  # the longest context suffix looked up (the suffix array is sorted this deep, and one more)
HISTORY = 4096  # how far back the text so far is searched
MIN_SHARE = 0.3  # the least chance that every draft so far is kept, to draft one more (measured: docs/speculative.md)
MIN_MATCH = 3
SAMPLE = 32  # occurrences counted per drafted character, evenly spaced over the range


def suffix_array(tokens: np.ndarray, depth: int = MAX_MATCH + 1) -> np.ndarray:
    """Start positions of the suffixes of `tokens` sorted by their first `depth` tokens (prefix doubling:
    ~log2(depth) numpy sorts). Ties past `depth` are in no particular order."""
    n = len(tokens)
    rank = tokens.astype(np.int64)
    order = np.argsort(rank, kind="stable")
    k = 1
    while k < depth:
        second = np.zeros(n, dtype=np.int64)
        second[:n - k] = rank[k:] + 1  # 0 = past the end: sorts first, as a shorter string does
        key = rank * (n + 1) + second
        order = np.argsort(key, kind="stable")
        ordered = key[order]
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.concatenate([[0], np.cumsum(ordered[1:] != ordered[:-1])])
        if rank[order[-1]] == n - 1:  # every suffix already apart
            break
        k *= 2
    return order.astype(np.int32)


class NgramIndex:
    """A suffix array over one training text, in the model's vocabulary."""

    def __init__(self, tokens: np.ndarray, suffixes: np.ndarray, vocab: list[str], text_sha256: str):
        self.tokens, self.vocab, self.text_sha256 = tokens.astype(np.uint8), vocab, text_sha256
        self.text = self.tokens.tobytes() + bytes([255]) * (MAX_MATCH + 1)  # past the end: never matches
        self.padded = np.frombuffer(self.text, dtype=np.uint8)
        self.suffixes = suffixes
        self._sa = array("i", suffixes.tobytes())  # Python ints for bisect's key, without numpy's boxing

    @classmethod
    def build(cls, train_text: str, vocab: list[str], text_sha256: str) -> NgramIndex:
        if len(vocab) > 255:
            raise GPTError(f"the ngram drafter needs a vocabulary of at most 255 characters, this one has {len(vocab)}")
        tokens = encode_text(train_text, vocab).astype(np.uint8)
        return cls(tokens, suffix_array(tokens), vocab, text_sha256)

    def save(self, path: Path) -> None:
        save_npz(path, {"version": INDEX_VERSION, "vocab": self.vocab, "text_sha256": self.text_sha256},
                 tokens=self.tokens, suffixes=self.suffixes)

    @classmethod
    def load(cls, path: Path) -> NgramIndex:
        meta, arrays = load_npz(path, "an ngram index", INDEX_VERSION, ("vocab", "text_sha256"), ("tokens", "suffixes"))
        return cls(arrays["tokens"], arrays["suffixes"], meta["vocab"], meta["text_sha256"])

    def match(self, context: bytes, bound: int = MAX_MATCH) -> tuple[int, int, int]:
        """(n, lo, hi): the longest suffix of `context` (at most `bound`, at most MAX_MATCH) that occurs, and the
        range of the suffix array whose suffixes start with it. The bound is tried first: while drafts are
        accepted the match grows with them, and one range search settles it."""
        best = (0, 0, len(self._sa))
        low, high = 1, min(MAX_MATCH, bound, len(context))
        if high >= 1:
            lo, hi = self._range(context[-high:])
            if lo < hi:
                return high, lo, hi
            high -= 1
        while low <= high:  # occurring is monotone in the suffix length: binary search on it
            n = (low + high) // 2
            lo, hi = self._range(context[-n:])
            if lo < hi:
                best, low = (n, lo, hi), n + 1
            else:
                high = n - 1
        return best

    def _range(self, pattern: bytes, lo: int = 0, hi: int | None = None) -> tuple[int, int]:
        m, text = len(pattern), self.text

        def key(i: int) -> bytes:
            return text[i:i + m]

        hi = len(self._sa) if hi is None else hi
        lo = bisect.bisect_left(self._sa, pattern, lo, hi, key=key)
        return lo, bisect.bisect_right(self._sa, pattern, lo, hi, key=key)

    def continue_match(self, context: bytes, n: int, lo: int, hi: int, k: int, min_share: float,
                       temperature: float = 0.0, uniforms: Sequence[float] = ()) -> list[int]:
        """Up to k ids following the match of `context`'s last n characters (range lo:hi), each picked from the
        characters that follow the occurrences as the model will pick its own: the most common (greedy), or
        the one whose counts, tempered, hold the j-th draw `uniforms[j]` in their CDF (in id order, as the
        sampler's); while the pick holds at least `min_share` of that (tempered) mass. Pure Python on at most
        SAMPLE occurrences: numpy's per-call cost would exceed a verify run's gain."""
        out: list[int] = []
        sa, text = self._sa, self.text
        pattern = context[-n:] if n else b""
        reach = 1.0  # how likely the model keeps every draft so far: each pick's share, multiplied
        while len(out) < k and n <= MAX_MATCH:
            if hi - lo == 1:  # one occurrence: copy what follows it
                tail = text[sa[lo] + n:sa[lo] + n + k - len(out)].split(b"\xff", 1)[0]
                out.extend(tail[:copy_length(reach, min_share)])
                break
            # the characters after the range's n shared ones are sorted, so evenly spaced occurrences count them
            stride = max(1, (hi - lo) // SAMPLE)
            runs = [(c, len(list(g))) for c, g in itertools.groupby(text[sa[i] + n] for i in range(lo, hi, stride))]
            total = sum(m for _, m in runs)
            if temperature == 0:
                c, m = max(runs, key=lambda run: run[1])
                share = m / total
            else:
                weights = [(m / total) ** (1.0 / temperature) for _, m in runs]
                cdf = list(itertools.accumulate(weights))
                j = min(bisect.bisect_right(cdf, uniforms[len(out)] * cdf[-1]), len(runs) - 1)
                c, share = runs[j][0], weights[j] / cdf[-1]
            reach *= share
            if c == 255 or reach < min_share:
                break
            pattern += bytes([c])
            n += 1
            if stride == 1:
                start = sum(m for ch, m in runs if ch < c)
                lo, hi = lo + start, lo + start + dict(runs)[c]
            else:
                lo, hi = self._range(pattern, lo, hi)
            out.append(c)
        return out


class NgramDrafter:
    """`propose(history, k)`: up to k ids from the longer of the two matches (see the module docstring)."""

    def __init__(self, index: NgramIndex, min_share: float = MIN_SHARE, min_match: int = MIN_MATCH):
        self.index, self.min_share, self.min_match = index, min_share, min_match
        self._last: tuple[Sequence[int], int, int] | None = None  # (history, its length, its match length)

    def propose(self, history: Sequence[int], k: int, params: SamplingParams, uniforms: np.ndarray) -> list[int]:
        context = bytes(history[-HISTORY:])
        bound = MAX_MATCH
        if self._last is not None and self._last[0] is history and self._last[1] <= len(history):
            bound = self._last[2] + len(history) - self._last[1]  # a match grows by at most what was appended
        n_text, lo, hi = self.index.match(context, bound)
        self._last = (history, len(history), n_text)
        n_self, at = self_match(context)
        if max(n_text, n_self) < self.min_match:
            return []
        if n_self >= n_text:
            return list(context[at:at + min(k, copy_length(1.0, self.min_share))])
        return self.index.continue_match(context, n_text, lo, hi, k, self.min_share, params.temperature, uniforms)


COPY_SHARE = 0.75  # the chance that a character copied from a single occurrence is kept (docs/speculative.md)


def copy_length(reach: float, min_reach: float) -> int:
    """How many characters to copy from a single occurrence before the chance the model keeps them all falls
    below `min_reach`, at COPY_SHARE each."""
    n = 0
    while n < MAX_MATCH and reach * COPY_SHARE >= min_reach:
        reach *= COPY_SHARE
        n += 1
    return n


def self_match(context: bytes) -> tuple[int, int]:
    """(n, at): the longest suffix of `context` (at most MAX_MATCH) that also ends earlier in it, and where the
    characters after its latest earlier occurrence start."""
    best = (0, 0)
    low, high = 1, min(MAX_MATCH, len(context) - 1)
    while low <= high:
        n = (low + high) // 2
        i = context.rfind(context[-n:], 0, len(context) - 1)
        if i >= 0:
            best, low = (n, i + n), n + 1
        else:
            high = n - 1
    return best


def open_index(model_path: Path, vocab: list[str], data_sha256: str | None, train_text: str | None = None,
               text_sha256: str | None = None, say=print) -> NgramIndex:
    """The index saved beside `model_path` (`ngram.npz`), checked against the model; built and saved from
    `train_text` (the training split) when there is none."""
    path = Path(model_path).parent / INDEX_FILE
    if path.is_file():
        index = NgramIndex.load(path)
        if index.vocab != vocab:
            raise GPTError(f"{path} was built for another vocabulary ({len(index.vocab)} characters, the model has "
                           f"{len(vocab)}): delete it and it is built again from this model's training text")
        if data_sha256 and index.text_sha256 != data_sha256:
            raise GPTError(f"{path} indexes another training text (sha256 {index.text_sha256[:12]}..., the model "
                           f"was trained on {data_sha256[:12]}...): delete it and it is built again")
        return index
    if train_text is None:
        raise GPTError(f"no ngram index at {path} and no training text to build it from")
    t0 = time.perf_counter()
    index = NgramIndex.build(train_text, vocab, text_sha256 or hashlib.sha256(train_text.encode()).hexdigest())
    index.save(path)
    say(f"ngram index: {len(index.tokens):,} characters of training text in {time.perf_counter() - t0:.1f} s, "
        f"saved to {path}")
    return index
