"""`--ema_decay D`: an exponential moving average of the weights, the model a run evaluates and saves.

After every optimizer step the average moves a share 1 - D towards the trained weights (D = 0.99 averages
roughly the last 100 steps). The average sits nearer the middle of the valley the noisy steps bounce
across, so it can score lower than the last weights; whether it does within a time budget is measured in
bench/results/ (bench.recipes). Early on the decay is min(D, (1 + n) / (10 + n)) after n updates, so the
first steps' random weights do not linger. The average is part of train_state.pt: `--resume` is exact.
"""

from __future__ import annotations

import copy

import torch

from gpt.model import GPT


class WeightEMA:
    """A frozen copy of the model whose weights follow the trained ones' moving average."""

    def __init__(self, model: GPT, decay: float):
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: GPT) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1 - decay)

    def state_dict(self) -> dict:
        return {"weights": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
