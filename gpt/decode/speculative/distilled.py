"""The `distilled` drafter: what the model itself tends to write after a short context, distilled from the model
once. Torch-free (numpy, and the model's own onnxruntime file to distil it).

Sampled text defeats a drafter that copies: at temperature 0.8 the model's next character is a draw from its
distribution, and a copied character matches that draw only as often as the model gives it. A drafter that
itself *samples* from a distribution close to the model's, spending the very draw the model will spend on that
position (the coupling of `gpt.decode.speculative.loop`), agrees with the model wherever the two distributions
do. This one keeps, for every context of the last 1 .. MAX_CONTEXT characters that occurs at least MIN_COUNT
times in the training split, the mean of the model's own next-character distributions after its occurrences:
one batched pass of the model over the training split, made once (tens of seconds for the `cpu` preset) and
saved beside the model as `distilled.npz`, tied to the model file's and the text's sha256. A draft character
comes from the longest context the table holds, through the sampler itself (`sample_tokens` on the table's
log-probabilities with the request's temperature, top-k, top-p and draw): greedy drafts are the table's argmax.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from gpt.data import sha256_of
from gpt.decode.sampler import SamplingParams, sample_tokens
from gpt.decode.speculative.ngram import HISTORY, self_match
from gpt.decode.speculative.training_text import load_npz, save_npz
from gpt.errors import GPTError

TABLE_FILE = "distilled.npz"
TABLE_VERSION = 1
MAX_CONTEXT = 8  # characters of context looked up (measured: docs/speculative.md)
MIN_COUNT = 12  # occurrences a context needs in the training split to get a row (8.7 MB for the `cpu` preset)
WINDOWS_PER_RUN = 8  # block_size windows of the training split per batched run of the model
# parameters x characters the distilling pass may take: the whole training split of Tiny Shakespeare for the `cpu`
# preset (about a minute on 2 cores), every 6th window for `shakespeare`, every 43rd for `large`
DISTIL_BUDGET = 2.0e12
SELF_MATCH = 8  # characters of the greedy text's end seen earlier in it, to copy what followed them
FLOOR = -30.0  # the log-probability stored for a character the model never gives weight there


def context_limit(vocab_size: int) -> int:
    """The longest context whose key (the characters as digits base vocab_size) fits an int64."""
    return max(1, min(MAX_CONTEXT, int(62 / math.log2(max(vocab_size, 2)))))


def context_keys(ids: np.ndarray, n: int, vocab_size: int) -> np.ndarray:
    """Key of the n characters ending at each position (the newest is the lowest digit); -1 before position n - 1."""
    keys = np.zeros(len(ids), dtype=np.int64)
    for back in range(n - 1, -1, -1):
        keys = keys * vocab_size + np.roll(ids.astype(np.int64), back)
    keys[:n - 1] = -1
    return keys


class DistilledTable:
    """Per context length n: the sorted keys of the contexts kept and their mean next-character log-probabilities."""

    def __init__(self, keys: list[np.ndarray], logprobs: list[np.ndarray], vocab: list[str], text_sha256: str,
                 model_sha256: str):
        self.keys, self.logprobs, self.vocab = keys, logprobs, vocab
        self.text_sha256, self.model_sha256 = text_sha256, model_sha256
        self.rows = [{key: row for row, key in enumerate(k.tolist())} for k in keys]  # key -> row, per n - 1

    @classmethod
    def build(cls, logits_of: Callable[[np.ndarray], np.ndarray], block_size: int, train_ids: np.ndarray,
              vocab: list[str], text_sha256: str, model_sha256: str, say=print,
              min_count: int = MIN_COUNT, stride: int = 1) -> DistilledTable:
        """`logits_of(ids [B, T]) -> [B, T, V]` is the model's prefill over whole windows of the training split:
        every `stride`-th block_size window of it."""
        V, started = len(vocab), time.perf_counter()
        windows = len(train_ids) // block_size
        if windows == 0:
            raise GPTError(f"the training split ({len(train_ids)} characters) is shorter than one block "
                           f"({block_size}): nothing to distil the drafter from")
        ids = np.asarray(train_ids[:windows * block_size], dtype=np.int64).reshape(windows, block_size)
        ids = ids[::stride].reshape(-1)
        windows = len(ids) // block_size
        probs = np.empty((len(ids), V), dtype=np.float32)
        for first in range(0, windows, WINDOWS_PER_RUN):
            lo, hi = first * block_size, min(windows, first + WINDOWS_PER_RUN) * block_size
            logits = logits_of(ids[lo:hi].reshape(-1, block_size)).reshape(-1, V)
            e = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probs[lo:hi] = e / e.sum(axis=-1, keepdims=True)
            if first % (WINDOWS_PER_RUN * 64) == 0 and first:
                say(f"distilling the drafter: {first / windows:.0%} of the training split "
                    f"({time.perf_counter() - started:.0f} s)")
        keys, logprobs = [], []
        for n in range(1, context_limit(V) + 1):
            k = context_keys(ids, n, V)
            order = np.argsort(k, kind="stable")
            ordered = k[order]
            starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
            counts = np.diff(np.r_[starts, len(ordered)])
            kept = (counts >= min_count) & (ordered[starts] >= 0)
            means = np.add.reduceat(probs[order], starts, axis=0)[kept] / counts[kept, None]
            keys.append(ordered[starts][kept])
            logprobs.append(np.maximum(np.log(np.maximum(means, 1e-30)), FLOOR).astype(np.float16))
        say(f"distilled drafter: {sum(map(len, keys)):,} contexts of 1 .. {len(keys)} characters from "
            f"{len(ids):,} characters of training text in {time.perf_counter() - started:.1f} s")
        return cls(keys, logprobs, vocab, text_sha256, model_sha256)

    def save(self, path: Path) -> None:
        header = {"version": TABLE_VERSION, "vocab": self.vocab, "text_sha256": self.text_sha256,
                  "model_sha256": self.model_sha256}
        save_npz(path, header, **{f"keys{n}": k for n, k in enumerate(self.keys, 1)},
                 **{f"logprobs{n}": p for n, p in enumerate(self.logprobs, 1)})

    @classmethod
    def load(cls, path: Path) -> DistilledTable:
        meta, arrays = load_npz(path, "a distilled table", TABLE_VERSION, ("vocab", "text_sha256", "model_sha256"),
                                ("keys1", "logprobs1"))
        n = sum(1 for name in arrays if name.startswith("keys"))
        return cls([arrays[f"keys{i}"] for i in range(1, n + 1)], [arrays[f"logprobs{i}"] for i in range(1, n + 1)],
                   meta["vocab"], meta["text_sha256"], meta["model_sha256"])

    def lookup(self, context: Sequence[int]) -> np.ndarray | None:
        """The log-probabilities [V] kept for the longest suffix of `context` the table holds (None: not even one
        character's)."""
        V, key = len(self.vocab), 0
        found = None
        for n in range(1, min(len(self.keys), len(context)) + 1):
            key += context[-n] * V ** (n - 1)
            row = self.rows[n - 1].get(key)
            if row is None:
                break
            found = self.logprobs[n - 1][row]
        return found


class DistilledDrafter:
    """`propose(history, k)`: k characters, each sampled from the table's row for the text so far (drafts
    included) with the draw the model will spend there; fewer only where the table holds no context. Greedy text
    repeats itself: where its last SELF_MATCH or more characters occurred earlier in it, what followed them then
    is copied instead (as the ngram drafter does), which the model keeps more often than the table's argmax."""

    def __init__(self, table: DistilledTable):
        self.table = table

    def propose(self, history: Sequence[int], k: int, params: SamplingParams, uniforms: np.ndarray) -> list[int]:
        if params.temperature == 0 and len(self.table.vocab) < 256:
            text = bytes(history[-HISTORY:])
            n, at = self_match(text)
            if n >= SELF_MATCH:
                return list(text[at:at + k])
        context = list(history[-MAX_CONTEXT:])
        out: list[int] = []
        settings = np.array([params.temperature]), np.array([params.top_k]), np.array([params.top_p])
        while len(out) < k:
            row = self.table.lookup(context)
            if row is None:
                break
            token = int(sample_tokens(row[None].astype(np.float64), *settings, uniforms[len(out):len(out) + 1])[0])
            out.append(token)
            context.append(token)
        return out


def open_table(model, training_ids: Callable[[], tuple[np.ndarray, str | None]], say=print) -> DistilledTable:
    """The table saved beside `model`'s file (`distilled.npz`), if it was distilled from this very file; else
    distilled from the model over `training_ids()` (the training split and its text's sha256, checked by
    `drafters.train_split`: read only then) and saved, replacing a table of another model (a model trained again
    into the same folder)."""
    path = Path(model.path).parent / TABLE_FILE
    model_sha256 = sha256_of(Path(model.path))
    if path.is_file():
        table = DistilledTable.load(path)
        if table.model_sha256 == model_sha256 and table.vocab == model.vocab:
            return table
        say(f"{path} was distilled from another model file than {model.path}: distilling it again")
    train_ids, text_sha256 = training_ids()
    from gpt.decode.backends.ort_decoder import open_onnx

    say(f"distilling the drafter from {model.path} over the training split (once; saved to {path})")
    full = open_onnx(model.path)  # every core: the model runs whole windows, not one step
    m = model.meta
    parameters = 12 * m.n_layer * m.n_embd ** 2 + len(m.vocab) * m.n_embd
    stride = max(1, math.ceil(parameters * len(train_ids) / DISTIL_BUDGET))
    if stride > 1:
        say(f"distilling from every {stride}th window of the training split (a model of ~{parameters / 1e6:.0f}M "
            "parameters: the whole split would take too long)")
    table = DistilledTable.build(full.logits, model.block_size, train_ids, model.vocab, text_sha256 or "",
                                 model_sha256, say, stride=stride)
    table.save(path)
    return table
