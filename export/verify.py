"""Checks of an exported file: onnx.checker, and parity of its logits with PyTorch's."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from gpt.decode.backends.ort_decoder import open_onnx
from gpt.errors import GPTError
from gpt.model import GPT

TOLERANCE = 1e-4  # fp32 parity, max |onnxruntime - PyTorch| over the logits
DECODE_STEPS = 32


def node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def check_model(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as e:
        raise GPTError(f"onnx.checker rejected {path}: {' '.join(str(e).split())[:300]}") from None


def parity(path: Path, model: GPT, batch: int = 2, steps: int = DECODE_STEPS, seed: int = 0) -> dict:
    """Max |onnxruntime - PyTorch| of the logits: every position of a prefill, then `steps` decode steps."""
    c = model.config
    prompt_len = max(1, min(16, c.block_size // 4))
    steps = min(steps, c.block_size - prompt_len)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, c.vocab_size, size=(batch, prompt_len), dtype=np.int64)
    decoder = open_onnx(path, threads=1)
    cache = model.new_cache(batch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add synchronisation (and stall on a busy machine)
    with contextlib.ExitStack() as restore, torch.inference_mode():
        restore.callback(torch.set_num_threads, threads)
        ref, _ = model(torch.from_numpy(ids), cache=cache)
        prefill_diff = float(np.abs(decoder.logits(ids) - ref.numpy()).max())
        decode_diff = 0.0
        token = ref[:, -1].argmax(-1, keepdim=True)
        for _ in range(steps):
            ref, _ = model(token, cache=cache)
            got = decoder.step(token.numpy())
            decode_diff = max(decode_diff, float(np.abs(got - ref[:, -1].numpy()).max()))
            token = ref[:, -1].argmax(-1, keepdim=True)
    return {"prefill": prefill_diff, "decode": decode_diff, "steps": steps, "prompt": prompt_len, "batch": batch}


def require_parity(diff: dict, path: Path) -> None:
    worst = max(diff["prefill"], diff["decode"])
    if worst > TOLERANCE:
        raise GPTError(f"onnxruntime logits differ from PyTorch by {worst:.2e} > {TOLERANCE:.0e} (prefill "
                       f"{diff['prefill']:.2e}, decode {diff['decode']:.2e}); {path} is kept for inspection")
