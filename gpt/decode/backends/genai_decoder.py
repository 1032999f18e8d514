"""onnxruntime-genai decoder: the same gqa file, run by onnxruntime-genai's C++ generator.

Behind our `prefill`/`step` interface, so the one sampler and the one window policy of `gpt.decode.loop` apply
and greedy text equals the other backends'. A prefill appends the window to a (rewound) generator, a step
appends our chosen token; both then read the logits. What differs from `--backend onnxruntime`: a
`genai_config.json` must sit beside the file (`python -m export.onnx --genai`); the sampling is ours, not
onnxruntime-genai's (its top-k/top-p would draw from another random stream); and batch 1 only: for a batch,
onnxruntime-genai appends tokens only through its own search, which ends a row at an end-of-text token that
a character model does not have. Needs `pip install onnxruntime-genai`; never imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gpt.decode.backends.ort_session import check_ids, default_threads, open_session
from gpt.errors import GPTError

CONFIG = "genai_config.json"


class GenaiDecoder:
    def __init__(self, path: Path | str, threads: int | None = None):
        try:
            import onnxruntime_genai as og
        except ImportError:
            raise GPTError("the onnxruntime-genai backend needs `pip install onnxruntime-genai`") from None
        path = Path(path)
        _, meta = open_session(path, threads=1)  # validates the file and reads its metadata
        if meta.layout != "gqa":
            raise GPTError(f"{path} has the {meta.layout} layout; onnxruntime-genai needs a gqa file exported "
                           f"with `python -m export.onnx --genai`")
        if not path.with_name(CONFIG).is_file():
            raise GPTError(f"{path.with_name(CONFIG)} is missing: onnxruntime-genai needs a gqa file exported "
                           f"with `python -m export.onnx --genai`")
        config = og.Config(str(path.parent))
        config.overlay(json.dumps({"model": {"decoder": {"filename": path.name, "session_options": {
            "intra_op_num_threads": threads or default_threads()}}}}))
        self.og, self.model = og, og.Model(config)
        self.vocab, self.block_size, self.val_loss = meta.vocab, meta.block_size, meta.val_loss
        self.generator, self.length = None, 0

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        ids = check_ids(ids, len(self.vocab), self.block_size)
        if ids.shape[0] != 1:
            raise GPTError(f"the onnxruntime-genai backend decodes one sample at a time (asked for {ids.shape[0]}); "
                           "use --backend onnxruntime for batches")
        if self.generator is None:
            params = self.og.GeneratorParams(self.model)
            params.set_search_options(max_length=self.block_size)
            self.generator = self.og.Generator(self.model, params)
        else:
            self.generator.rewind_to(0)
        self.generator.append_tokens(ids.astype(np.int32))
        self.length = ids.shape[1]
        return self.generator.get_logits()[:, -1]

    def step(self, ids: np.ndarray) -> np.ndarray:
        if self.generator is None:
            raise GPTError("step() before prefill(): the decoder holds no KV cache")
        if self.length + 1 > self.block_size:
            raise GPTError(f"sequence of {self.length + 1} tokens exceeds block_size {self.block_size}")
        self.generator.append_tokens(np.asarray(ids, dtype=np.int32).reshape(1, 1))
        self.length += 1
        return self.generator.get_logits()[:, -1]
