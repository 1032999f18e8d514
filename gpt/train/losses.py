"""The two val-loss figures training reports: a quick estimate on random batches at every evaluation, and an
exact full pass over the split for the final, best model."""

from __future__ import annotations

import numpy as np
import torch

from gpt.config import TrainConfig
from gpt.data import BatchSampler, eval_windows
from gpt.model import GPT


@torch.no_grad()
def estimate_loss(model, splits: dict[str, np.ndarray], t: TrainConfig, block: int, device, amp, seed: int,
                  eval_iters: int | None = None) -> dict:
    """Mean loss over eval_iters (default: the config's) random batches per split, from RNGs of its own
    (training batches unaffected)."""
    model.eval()
    out = {}
    for i, (name, data) in enumerate(splits.items()):
        sampler = BatchSampler(data, block, t.batch_size, seed=seed + 7919 * (i + 1))
        losses = []
        for _ in range(eval_iters or t.eval_iters):
            x, y = (torch.from_numpy(a).to(device) for a in sampler.next())
            with amp:
                losses.append(model(x, y)[1].item())
        out[name] = float(np.mean(losses))
    model.train()
    return out


@torch.no_grad()
def full_loss(model: GPT, data: np.ndarray, block: int, device, batch_size: int = 64) -> float:
    """Mean next-token loss over the whole split in non-overlapping block_size windows."""
    model.eval()
    total, count = 0.0, 0
    for x, y in eval_windows(data, block, batch_size):
        total += model(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))[1].item() * y.size
        count += y.size
    return total / count
