"""The learning-rate schedule: linear warmup, then from the peak down to min_lr as the run's progress goes from 0
to 1, along a cosine or (wsd: warmup-stable-decay) flat at the peak until the last decay_fraction, then in a
straight line.

A run of fixed length has progress (it - warmup) / (lr_decay_iters - warmup). A run under a time budget does
not know its length in advance (gpt/train/budget.py re-plans it as the machine's pace moves), so it carries a
`Progress` that each step advances by what is left over the steps left: with a fixed end that is the same
line, and a new end bends the line from where it is instead of making it jump. With wsd the stable phase thus
lasts until the iterations left are the decay's share, and the decay is planned from then on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpt.config import TrainConfig


def lr_at(it: int, t: TrainConfig, progress: float | None = None) -> float:
    """The learning rate of iteration `it` (a function of the config, or of `progress` where one is given)."""
    if it < t.warmup_iters:
        return t.learning_rate * (it + 1) / (t.warmup_iters + 1)
    if progress is None:
        progress = (it - t.warmup_iters) / max(1, t.lr_decay_iters - t.warmup_iters)
    if progress >= 1:
        return t.min_lr
    if t.lr_schedule == "wsd":
        stable = 1 - t.decay_fraction
        return t.learning_rate - max(0.0, (progress - stable) / t.decay_fraction) * (t.learning_rate - t.min_lr)
    return t.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (t.learning_rate - t.min_lr)


@dataclass
class Progress:
    """A run's position in its schedule after warmup, from 0 to 1, for an end that moves."""

    value: float = 0.0

    def advance(self, it: int, end_iter: int, warmup_iters: int) -> None:
        """After iteration `it` of a run planned to end at `end_iter`."""
        if it >= warmup_iters:
            self.value = min(1.0, self.value + (1.0 - self.value) / max(1, end_iter - it))
