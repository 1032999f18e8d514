"""The model runner: one gqa session over a cache of `slots` rows, each row one request's keys and values.

    cache (per layer, key and value)      [slots, H, block_size, D] float32, numpy-owned
    prefill(slot, ids, start)             binds row `slot` alone (a contiguous [1, H, block_size, D] view) and
                                          writes positions start .. start + T - 1 of that row, in place
    decode(tokens, lengths, rows)         one step for rows 0 .. rows - 1 together: row b feeds tokens[b] at
                                          position lengths[b]; attention_mask row b = lengths[b] + 1 ones
    decode_sampled(..., temperature, u)   the same step, and each row's token sampled by the graph's own
                                          sampler (gpt.decode.sampler_graph) at its temperature with its draw

GroupQueryAttention reads each row's length from its mask row (`seqlens_k`) and writes each row's new key and
value at that row's own position; the graph takes each row's positions from the same mask (format_version
3). A row that does not take part in a step (free, or mid-way through a chunked prefill) is given its own
current length: the step writes a throwaway entry at the position that row's next write overwrites.
Torch-free: numpy + onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gpt.decode.backends.ort_session import check_signature, open_session, samples
from gpt.decode.onnx_format import OnnxMeta, input_names, output_names
from gpt.decode.sampler_graph import TEMPERATURE, TOKENS, UNIFORM
from gpt.errors import GPTError


@dataclass
class _DecodeBinding:
    """The IO binding of a decode step over the first `rows` slots: every buffer bound once, and the views a step
    writes and reads, made once (slicing a buffer anew is a numpy call a step)."""

    io: ort.IOBinding
    views: list[np.ndarray]  # keeps the numpy views behind the bound OrtValues alive
    ids: np.ndarray  # [rows]: the tokens fed
    temperature: np.ndarray  # [rows]: the sampling head's inputs
    uniform: np.ndarray
    sampled: np.ndarray  # [rows]: its output
    logits: np.ndarray  # [rows, V]


def aligned_zeros(shape: tuple[int, ...], align: int = 4096) -> np.ndarray:
    """A zeroed float32 array whose data starts on an `align`-byte boundary, as onnxruntime's own buffers do
    (numpy's start 16 or 48 bytes into a cache line, so every 64-byte row load of GroupQueryAttention's
    keys/values straddles two lines): 1342 vs 1374 us a step, shakespeare fp32 at context 200, batch 1."""
    nbytes = int(np.prod(shape)) * 4
    raw = np.zeros(nbytes + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(np.float32).reshape(shape)


class SlotRunner:
    def __init__(self, path: Path | str, slots: int, threads: int | None = None):
        if slots < 1:
            raise GPTError(f"slots must be >= 1, got {slots}")
        self.path = Path(path)
        self.session, self.meta = open_session(self.path, threads, sampler=True)
        m: OnnxMeta = self.meta
        if m.layout != "gqa":
            raise GPTError(f"{self.path} has the {m.layout} layout; the engine needs the gqa layout: "
                           f"re-export it with `python -m export.onnx --ckpt CKPT --out {self.path}`")
        self.past_names = input_names(m.n_layer, "gqa")[2:]
        self.present_names = output_names(m.n_layer)[1:]
        check_signature(self.session, m, self.path, input_names(m.n_layer, "gqa"), output_names(m.n_layer))
        if not samples(self.session):
            raise GPTError(f"{self.path}: the sampling head does not fit its graph; re-export it with "
                           f"`python -m export.onnx --ckpt CKPT --out {self.path}`")
        self.slots, self.block_size, self.vocab = slots, m.block_size, m.vocab
        shape = (slots, m.n_head, m.block_size, m.head_dim)
        self.cache = [aligned_zeros(shape) for _ in self.past_names]
        self.step_ids = np.zeros((slots, 1), dtype=np.int64)
        self.step_logits = np.zeros((slots, 1, len(m.vocab)), dtype=np.float32)
        self.temperature, self.uniform = np.ones((slots, 1, 1)), np.zeros((slots, 1, 1))  # the sampling head's inputs
        self.sampled = np.zeros((slots, 1), dtype=np.int64)  # and its output
        self.positions = np.arange(m.block_size + 1, dtype=np.int64)
        self.mask = np.zeros(slots * m.block_size, dtype=np.int64)  # a decode step's attention_mask, rows > 1
        self.ones = np.ones(m.block_size, dtype=np.int64)  # a batch-1 step's: never written
        self._masks: dict[tuple[int, int], tuple[np.ndarray, ort.OrtValue]] = {}
        self._decode: dict[int, _DecodeBinding] = {}

    def _bind_cache(self, io: ort.IOBinding, rows: slice) -> list[np.ndarray]:
        views = [c[rows] for c in self.cache]
        for past, present, view in zip(self.past_names, self.present_names, views, strict=True):
            value = ort.OrtValue.ortvalue_from_numpy(view)
            io.bind_ortvalue_input(past, value)
            io.bind_ortvalue_output(present, value)
        return views

    def _run(self, io: ort.IOBinding) -> None:
        try:
            self.session.run_with_iobinding(io)
        except Exception as e:
            raise GPTError(f"onnxruntime failed on {self.path}: {' '.join(str(e).split())[:300]}") from None

    def prefill(self, slot: int, ids: np.ndarray, start: int) -> np.ndarray:
        """Write `ids` [T] at positions start .. start + T - 1 of row `slot`; the logits of its last one [V]."""
        return self.extend(slot, ids, start)[-1]

    def extend(self, slot: int, ids: np.ndarray, start: int) -> np.ndarray:
        """Write `ids` [T] at positions start .. start + T - 1 of row `slot` (batch 1, that row's view of the
        cache: a chunk of a prefill, or a speculative verify run); the logits after each of them [T, V]."""
        return self._extend(slot, ids, start, 1.0, np.zeros((1, 1, 1))).get_outputs()[0].numpy()[0]

    def extend_sampled(self, slot: int, ids: np.ndarray, start: int, temperature: float,
                       uniform: np.ndarray) -> np.ndarray:
        """`extend`, and the token sampled after each of the T positions at `temperature` (> 0) with draw
        uniform[t] [T], computed by the run (a speculative verify run: the model's own token after each draft)."""
        io = self._extend(slot, ids, start, temperature, np.asarray(uniform, dtype=np.float64).reshape(1, -1, 1))
        return io.get_outputs()[-1].numpy()[0]

    def _extend(self, slot: int, ids: np.ndarray, start: int, temperature: float,
                uniform: np.ndarray) -> ort.IOBinding:
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(1, -1)
        end = start + ids.shape[1]
        if not 0 <= start < end <= self.block_size:
            raise GPTError(f"prefill of positions {start}..{end - 1} does not fit block_size {self.block_size}")
        io = self.session.io_binding()
        io.bind_cpu_input("input_ids", ids)
        io.bind_cpu_input("attention_mask", np.ones((1, end), dtype=np.int64))
        io.bind_output("logits", "cpu")
        self._bind_cache(io, slice(slot, slot + 1))  # views of self.cache: their memory outlives the run
        io.bind_cpu_input(TEMPERATURE, np.full((1, 1, 1), temperature))
        io.bind_cpu_input(UNIFORM, uniform)
        io.bind_output(TOKENS, "cpu")
        self._run(io)
        return io

    def _bind_sampler(self, io: ort.IOBinding, rows: slice) -> list[np.ndarray]:
        temperature, uniform, sampled = self.temperature[rows], self.uniform[rows], self.sampled[rows]
        io.bind_ortvalue_input(TEMPERATURE, ort.OrtValue.ortvalue_from_numpy(temperature))
        io.bind_ortvalue_input(UNIFORM, ort.OrtValue.ortvalue_from_numpy(uniform))
        io.bind_ortvalue_output(TOKENS, ort.OrtValue.ortvalue_from_numpy(sampled))
        return [temperature, uniform, sampled]

    def decode(self, tokens: np.ndarray, lengths: np.ndarray, rows: int) -> np.ndarray:
        """One step over rows 0 .. rows - 1 (tokens and lengths [rows]); their logits [rows, V] (a view, valid
        until the next step)."""
        return self._step(self._binding(rows), tokens, lengths, rows).logits

    def decode_sampled(self, tokens: np.ndarray, lengths: np.ndarray, rows: int, temperature: np.ndarray,
                       uniform: np.ndarray) -> np.ndarray:
        """`decode`, and the token row b samples from its logits at temperature[b] (> 0) with draw uniform[b]:
        `gpt.decode.sampler.sample_tokens` with no top-k or top-p, computed by the run [rows] (a view, valid until
        the next step)."""
        binding = self._binding(rows)
        binding.temperature[...] = temperature
        binding.uniform[...] = uniform
        return self._step(binding, tokens, lengths, rows).sampled

    def _binding(self, rows: int) -> _DecodeBinding:
        binding = self._decode.get(rows)
        if binding is None:
            io = self.session.io_binding()
            io.bind_ortvalue_input("input_ids", ort.OrtValue.ortvalue_from_numpy(self.step_ids[:rows]))
            io.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(self.step_logits[:rows]))
            views = self._bind_cache(io, slice(0, rows)) + self._bind_sampler(io, slice(0, rows))
            binding = self._decode[rows] = _DecodeBinding(
                io, views, self.step_ids[:rows, 0], self.temperature[:rows, 0, 0], self.uniform[:rows, 0, 0],
                self.sampled[:rows, 0], self.step_logits[:rows, 0])
        return binding

    def _step(self, binding: _DecodeBinding, tokens: np.ndarray, lengths: np.ndarray, rows: int) -> _DecodeBinding:
        total = int(lengths[0] if rows == 1 else lengths.max()) + 1
        if total > self.block_size:
            raise GPTError(f"a decode step at position {total - 1} exceeds block_size {self.block_size}")
        binding.ids[...] = tokens
        mask, value = self._mask(rows, total)
        if rows > 1:
            np.less_equal(self.positions[:total], lengths[:, None], out=mask)
        binding.io.bind_ortvalue_input("attention_mask", value)
        self._run(binding.io)
        return binding

    def _mask(self, rows: int, total: int) -> tuple[np.ndarray, ort.OrtValue]:
        """A step's attention_mask [rows, total] and its OrtValue, made once per shape over our own buffer (a
        step writes the array in place; binding the OrtValue costs half of binding an array, which onnxruntime
        wraps anew each time). At batch 1 the mask is all ones: a view of `ones`, never written."""
        found = self._masks.get((rows, total))
        if found is None:
            array = self.ones[:total].reshape(1, total) if rows == 1 else self.mask[:rows * total].reshape(rows, total)
            found = self._masks[(rows, total)] = (array, ort.OrtValue.ortvalue_from_numpy(array))
        return found
