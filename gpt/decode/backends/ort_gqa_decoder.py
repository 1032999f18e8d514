"""onnxruntime decoder for the `gqa` layout: an in-place KV cache through IO binding. Torch-free.

Per batch size, once: one [B, H, block_size, D] OrtValue per layer and key/value, bound as BOTH the layer's
past input and its present output, so GroupQueryAttention writes each step's keys/values into it in place;
the token ids and the step's logits are numpy arrays wrapped (not copied) as OrtValues and bound once. Per
step only the token ids are written into their array and `attention_mask` (a view of a ones buffer, whose
length tells the op the sequence length; one OrtValue per length, made once) is re-bound: nothing is
allocated or copied that grows with the context, and every decode step has the same input shapes.

Opened by `open_onnx`, the session ends in the sampling head (`gpt.decode.sampler_graph`): `step_sampled` writes
each row's temperature and draw into buffers bound once and returns the token the run itself sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gpt.decode.backends.ort_session import check_ids, check_signature, samples
from gpt.decode.onnx_format import OnnxMeta, input_names, output_names
from gpt.decode.sampler_graph import TEMPERATURE, TOKENS, UNIFORM
from gpt.errors import GPTError


class _RunBuffers:
    """run()'s buffers for one length T and their OrtValues, made once: ids [1, T], logits [1, T, V], the
    sampling head's draws [1, T, 1] and tokens [1, T]."""

    def __init__(self, ids: np.ndarray, logits: np.ndarray, uniform: np.ndarray, sampled: np.ndarray):
        self.ids, self.logits, self.uniform, self.sampled = ids, logits, uniform, sampled
        self.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in (ids, logits, uniform, sampled)]


class OrtGQADecoder:
    """`prefill(ids [B, T]) -> logits [B, V]` and `step(ids [B, 1]) -> logits [B, V]`, cache in place."""

    def __init__(self, session: ort.InferenceSession, meta: OnnxMeta, path: Path | str = "<model>"):
        if meta.layout != "gqa":
            raise GPTError(f"{path} has the {meta.layout} layout; open it with gpt.decode.backends.open_onnx")
        self.session, self.meta, self.path = session, meta, Path(path)
        self.vocab, self.block_size, self.val_loss = meta.vocab, meta.block_size, meta.val_loss
        self.past_names = input_names(meta.n_layer, "gqa")[2:]
        self.present_names = output_names(meta.n_layer)[1:]
        check_signature(session, meta, self.path, input_names(meta.n_layer, "gqa"), output_names(meta.n_layer))
        self.sampling = samples(session)
        self.batch = 0
        self.length = 0

    def _allocate(self, batch: int) -> None:
        m = self.meta
        shape = (batch, m.n_head, m.block_size, m.head_dim)
        self.io = self.session.io_binding()
        self.step_logits = np.zeros((batch, 1, len(m.vocab)), dtype=np.float32)
        self.io.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(self.step_logits))  # output 0
        self.cache = [ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32) for _ in self.past_names]
        for past, present, buffer in zip(self.past_names, self.present_names, self.cache, strict=True):
            self.io.bind_ortvalue_input(past, buffer)
            self.io.bind_ortvalue_output(present, buffer)
        self.step_ids = np.zeros((batch, 1), dtype=np.int64)
        self.step_ids_value = ort.OrtValue.ortvalue_from_numpy(self.step_ids)
        if self.sampling:  # a step's: bound once (a prefill's or a run's draws are bound in their place)
            self.temperature, self.uniform = np.ones((batch, 1, 1)), np.zeros((batch, 1, 1))
            self.sampled = np.zeros((batch, 1), dtype=np.int64)
            self.uniform_value = ort.OrtValue.ortvalue_from_numpy(self.uniform)
            self.sampled_value = ort.OrtValue.ortvalue_from_numpy(self.sampled)
            self.io.bind_ortvalue_input(TEMPERATURE, ort.OrtValue.ortvalue_from_numpy(self.temperature))
        self.ones = np.ones(batch * m.block_size, dtype=np.int64)
        self.masks: dict[int, ort.OrtValue] = {}  # attention_mask [batch, length] per length: views of `ones`
        self.batch, self.length, self.stepping = batch, 0, False
        self.runs: dict[int, _RunBuffers] = {}  # run()'s buffers per length

    def _run(self, total: int) -> None:
        mask = self.masks.get(total)
        if mask is None:  # made once per length: binding an OrtValue costs half of binding an array
            mask = self.masks[total] = ort.OrtValue.ortvalue_from_numpy(
                self.ones[:self.batch * total].reshape(self.batch, total))
        self.io.bind_ortvalue_input("attention_mask", mask)
        try:
            self.session.run_with_iobinding(self.io)
        except Exception as e:
            raise GPTError(f"onnxruntime failed on {self.path}: {' '.join(str(e).split())[:300]}") from None
        self.length = total

    def logits(self, ids: np.ndarray, uniform: np.ndarray | None = None) -> np.ndarray:
        """A fresh prefill: logits for every position [B, T, V]; the cache then holds these T positions. With the
        sampling head, `uniform` [B, T, 1] are the draws after each position (default: the step's, any)."""
        ids = check_ids(ids, len(self.vocab), self.block_size)
        if ids.shape[0] != self.batch:
            self._allocate(ids.shape[0])
        self.io.bind_cpu_input("input_ids", ids)
        self.io.bind_output("logits", "cpu")  # [B, T, V]: onnxruntime allocates it
        if self.sampling:
            self.io.bind_cpu_input(UNIFORM, self.uniform if uniform is None else uniform)
            self.io.bind_output(TOKENS, "cpu")
        self.stepping = False
        self._run(ids.shape[1])
        return self.io.get_outputs()[0].numpy()

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        return self.logits(ids)[:, -1]

    def run(self, ids: Sequence[int], start: int) -> np.ndarray:
        """Batch 1: write `ids` at positions start .. start + T - 1 (what the cache held past `start` is dropped:
        the shorter attention_mask never reads it) and return their logits [T, V] (valid until the next call);
        start 0 is a fresh prefill. The verify run of speculative decoding (`gpt.decode.speculative.loop.Verifier`): its
        ids and logits buffers are bound once per length T, as a step's are."""
        if start == 0:
            return self.logits(np.asarray([ids]))[0]
        if self.batch != 1 or not 0 < start <= self.length:
            raise GPTError(f"run() at position {start} needs a batch-1 cache holding at least {start} positions "
                           f"(it holds {self.length}, batch {self.batch})")
        n = len(ids)
        if start + n > self.block_size:
            raise GPTError(f"sequence of {start + n} tokens exceeds block_size {self.block_size}")
        b = self._buffers(n)
        b.ids[0] = ids
        if b.ids.min() < 0 or b.ids.max() >= len(self.vocab):
            raise GPTError(f"token ids must be in [0, {len(self.vocab)}), got {b.ids.min()}..{b.ids.max()}")
        self.io.bind_ortvalue_input("input_ids", b.values[0])
        self.io.bind_ortvalue_output("logits", b.values[1])
        if self.sampling:
            self.io.bind_ortvalue_input(UNIFORM, b.values[2])
            self.io.bind_ortvalue_output(TOKENS, b.values[3])
        self.stepping = False
        self._run(start + n)
        return b.logits[0]

    def run_sampled(self, ids: Sequence[int], start: int, temperature: float, uniform: np.ndarray) -> np.ndarray:
        """`run`, and the token sampled after each of the T positions at `temperature` (> 0) with draw
        uniform[t] [T]: `gpt.decode.sampler.sample_tokens` on each row of run()'s logits, no top-k or top-p,
        computed by the run itself (a speculative verify run: the model's own token after each draft)."""
        if not self.sampling:
            raise GPTError(f"run_sampled() needs the sampling head: open {self.path} with "
                           "gpt.decode.backends.open_onnx")
        if start == 0 and self.batch != 1:
            self._allocate(1)
        self.temperature[...] = temperature
        if start == 0:
            self.logits(np.asarray([ids]), np.asarray(uniform, dtype=np.float64).reshape(1, -1, 1))
            return self.io.get_outputs()[-1].numpy()[0]
        b = self._buffers(len(ids))
        b.uniform[0, :, 0] = uniform
        self.run(ids, start)
        return b.sampled[0]

    def _buffers(self, n: int) -> _RunBuffers:
        b = self.runs.get(n)
        if b is None:
            b = self.runs[n] = _RunBuffers(np.zeros((1, n), dtype=np.int64),
                                           np.zeros((1, n, len(self.vocab)), dtype=np.float32),
                                           np.zeros((1, n, 1)), np.zeros((1, n), dtype=np.int64))
        return b

    def step(self, ids: np.ndarray) -> np.ndarray:
        self._step(ids)
        return self.step_logits[:, 0].copy()

    def step_sampled(self, ids: np.ndarray, temperature: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """`step`, and the token each row samples from its logits at its temperature (> 0) with its draw [B]:
        `gpt.decode.sampler.sample_tokens` with no top-k or top-p, computed by the run itself."""
        self.temperature[:, 0, 0] = temperature
        self.uniform[:, 0, 0] = uniform
        self._step(ids)
        return self.sampled[:, 0].copy()

    def _step(self, ids: np.ndarray) -> None:
        if self.length == 0:
            raise GPTError("step() before prefill(): the decoder holds no KV cache")
        if ids.shape != self.step_ids.shape:
            raise GPTError(f"step() takes token ids of shape {self.step_ids.shape}, got {ids.shape}")
        if self.length + 1 > self.block_size:
            raise GPTError(f"sequence of {self.length + 1} tokens exceeds block_size {self.block_size}")
        if not self.stepping:  # bind the step's fixed-shape buffers again after a prefill
            self.io.bind_ortvalue_input("input_ids", self.step_ids_value)
            self.io.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(self.step_logits))
            if self.sampling:
                self.io.bind_ortvalue_input(UNIFORM, self.uniform_value)
                self.io.bind_ortvalue_output(TOKENS, self.sampled_value)
            self.stepping = True
        self.step_ids[...] = ids
        self._run(self.length + 1)
