"""onnxruntime decoders, one per layout of the file (see `gpt.decode.onnx_format`). Torch-free.

`OrtDecoder` runs the portable `onnx` layout (concat-style cache): each call's `present.*` outputs are fed back
as the next call's `past_key_values.*` through plain `session.run`. The `gqa` layout has its own decoder,
`OrtGQADecoder` (in-place cache through IO binding); `open_onnx` picks the right one from the metadata, and opens
the session with the sampling head (`gpt.decode.sampler_graph`): `step_sampled` returns the token the run sampled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from gpt.decode.backends.ort_session import check_ids, check_signature, open_session, samples
from gpt.decode.onnx_format import OnnxMeta, input_names, output_names
from gpt.decode.sampler_graph import TEMPERATURE, TOKENS, UNIFORM
from gpt.errors import GPTError


def open_onnx(path: Path | str, threads: int | None = None):
    """The decoder for an exported file, whichever its layout."""
    session, meta = open_session(Path(path), threads, sampler=True)
    if meta.layout == "gqa":
        from gpt.decode.backends.ort_gqa_decoder import OrtGQADecoder

        return OrtGQADecoder(session, meta, path)
    return OrtDecoder(session, meta, path)


class OrtDecoder:
    """`prefill(ids [B, T]) -> logits [B, V]` and `step(ids [B, 1]) -> logits [B, V]` over one session."""

    def __init__(self, session: ort.InferenceSession, meta: OnnxMeta, path: Path | str = "<model>"):
        if meta.layout != "onnx":
            raise GPTError(f"{path} has the {meta.layout} layout; open it with gpt.decode.backends.open_onnx")
        self.session, self.meta, self.path = session, meta, Path(path)
        self.vocab, self.block_size, self.val_loss = meta.vocab, meta.block_size, meta.val_loss
        self.output_names = output_names(meta.n_layer)
        self.input_names = input_names(meta.n_layer, meta.layout)
        check_signature(session, meta, self.path, self.input_names, self.output_names)
        self.sampling = samples(session)
        self.past: list[np.ndarray] = []
        self.length = 0

    def _run(self, ids: np.ndarray, past: list[np.ndarray], temperature=1.0, uniform=0.0) -> list[np.ndarray]:
        """logits, then each present, then (with the sampling head) the sampled ids."""
        feeds = dict(zip(self.input_names, [ids, *past], strict=True))
        names = self.output_names
        if self.sampling:
            rows = np.ones((ids.shape[0], 1, 1))
            feeds |= {TEMPERATURE: rows * temperature, UNIFORM: rows * uniform}
            names = [*names, TOKENS]
        try:
            outputs = self.session.run(names, feeds)
        except Exception as e:
            raise GPTError(f"onnxruntime failed on {self.path}: {' '.join(str(e).split())[:300]}") from None
        self.past, self.length = outputs[1:1 + len(past)], past[0].shape[2] + ids.shape[1]
        return outputs

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """A fresh prefill: logits for every position [B, T, V]."""
        ids = check_ids(ids, len(self.vocab), self.block_size)
        m = self.meta
        empty = np.zeros((ids.shape[0], m.n_head, 0, m.head_dim), dtype=np.float32)
        return self._run(ids, [empty] * (2 * m.n_layer))[0]

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        return np.array(self.logits(ids)[:, -1], dtype=np.float32)

    def step(self, ids: np.ndarray) -> np.ndarray:
        return np.array(self._run(self._checked(ids), self.past)[0][:, -1], dtype=np.float32)

    def step_sampled(self, ids: np.ndarray, temperature: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """`step`, and the token each row samples at its temperature (> 0) with its draw [B], by the run itself."""
        ids = self._checked(ids)
        t, u = np.asarray(temperature, dtype=np.float64), np.asarray(uniform, dtype=np.float64)
        return self._run(ids, self.past, t[:, None, None], u[:, None, None])[-1][:, -1]

    def _checked(self, ids: np.ndarray) -> np.ndarray:
        if not self.past:
            raise GPTError("step() before prefill(): the decoder holds no KV cache")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.past[0].shape[0] != ids.shape[0]:
            raise GPTError(f"the KV cache holds a batch of {self.past[0].shape[0]}, the tokens a batch of "
                           f"{ids.shape[0]}")
        if self.length + ids.shape[1] > self.block_size:
            raise GPTError(f"sequence of {self.length + ids.shape[1]} tokens exceeds block_size {self.block_size}")
        return ids
