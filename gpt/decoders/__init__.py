"""Decoders: one small object per backend behind `prefill(ids)` / `step(ids)` (see gpt.generate).

Each backend's heavy imports (torch, onnxruntime) happen only when that backend is chosen, so the
onnxruntime path never imports torch.
"""

from __future__ import annotations

BACKENDS = ("torch", "onnxruntime")
