"""What gpt.inspect found, as numbers: the one object the analysis fills (report.py) and the page shows (page.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gpt.inspect.analysis import Projection
from gpt.inspect.capture import Trace


@dataclass
class Findings:
    """Everything the report shows, as numbers."""

    prompt: str
    itos: list[str]
    trace: Trace
    layers: list[int]  # the layers and heads whose attention maps are drawn
    heads: list[int]
    depths: list[str]
    lens_top: list[list[list[tuple[str, float]]]]  # [depth][position] -> top-k (char, probability)
    final_top: list[list[tuple[str, float]]]  # [position] -> the model's own top-k
    true_next: torch.Tensor  # [depth, T-1]
    attended: torch.Tensor  # [L, T]
    habits: torch.Tensor  # [L, H, len(HABITS)]
    embedding: list[tuple[str, Projection]]  # (title, projection): trained, then untrained if asked
    norms_before: torch.Tensor  # [2L+1, T]
    norms_after: torch.Tensor
    layer_norms: list[str]

    @property
    def chars(self) -> list[str]:
        return list(self.prompt)
