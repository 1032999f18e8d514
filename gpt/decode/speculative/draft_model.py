"""The draft-model drafter: a smaller exported gqa file with the same vocabulary and block size (e.g. the `cpu`
preset drafting for `shakespeare` or `large`) proposes characters one cheap step at a time. Torch-free.

Its cache follows the text: each proposal first feeds what was kept since the last one (one run from the first
position where its window and the text part), then steps k times. It picks its tokens as plain decoding would
(argmax, or its own distribution under the request's temperature, top-k and top-p at the very draw the model
will spend on that position), so where the two models agree the draft is kept. It stops drafting where its
token's probability falls below `min_prob`: unsure characters are rarely accepted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpt.decode.loop import restart_length
from gpt.decode.sampler import SamplingParams, softmax
from gpt.decode.speculative.loop import model_tokens
from gpt.errors import GPTError

MIN_PROB = 0.3  # docs/speculative.md


class ModelDrafter:
    def __init__(self, decoder, target_vocab: list[str], target_block_size: int, min_prob: float = MIN_PROB):
        path = getattr(decoder, "path", "the draft file")
        if decoder.vocab != target_vocab:
            raise GPTError(f"draft model {path} has another vocabulary ({len(decoder.vocab)} characters, the model "
                           f"{len(target_vocab)}): draft with a file trained on the same text")
        if decoder.block_size != target_block_size:
            raise GPTError(f"draft model {path} has block_size {decoder.block_size}, the model {target_block_size}: "
                           "export a draft trained with the same --block_size")
        self.decoder, self.min_prob = decoder, min_prob
        self.block = decoder.block_size
        self.offset = 0  # where the draft's window starts in the text
        self.window: list[int] = []  # the ids in the draft's cache

    def propose(self, history: Sequence[int], k: int, params: SamplingParams, uniforms: np.ndarray) -> list[int]:
        text = history[self.offset:]
        same = common_prefix(self.window, text) if len(history) >= self.offset else 0
        if same == 0 or len(text) + k > self.block:  # a new window: the last ids the loop keeps, prefilled
            self.offset = max(0, len(history) - restart_length(self.block))
            text, same = history[self.offset:], 0
        self.window = list(text)
        same = min(same, len(text) - 1)  # at least the last id runs: its logits give the first draft
        logits = self.decoder.run(self.window[same:], same)[-1:]
        tokens: list[int] = []
        while True:
            token = int(model_tokens(logits, params, uniforms[len(tokens):])[0])
            if softmax(logits[0].astype(np.float64))[token] < self.min_prob:
                break
            tokens.append(token)
            if len(tokens) == k:
                return tokens
            self.window.append(token)
            logits = self.decoder.run([token], len(self.window) - 1)[-1:]
        return tokens


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if list(a[:n]) == list(b[:n]):
        return n
    i = 0
    while a[i] == b[i]:
        i += 1
    return i
