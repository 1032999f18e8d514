"""The torch device a command runs on: the one place that checks CUDA is there when asked for."""

from __future__ import annotations

import torch

from gpt.errors import GPTError


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when present, else CPU), `cpu` or `cuda` (a one-line error when CUDA is missing)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise GPTError("--device cuda was asked for but CUDA is not available; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
