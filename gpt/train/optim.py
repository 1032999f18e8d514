"""The optimizers a run steps as one: AdamW for every weight (nanoGPT), or Muon for the hidden matrices.

`--optimizer muon` follows the modded-nanoGPT speedruns: Muon (gpt/train/muon.py: momentum, then each update
orthogonalised by a Newton-Schulz iteration) for the 2-D weights inside the blocks, AdamW for what is not a
hidden matrix (the token/position embeddings, which the head shares, and the LayerNorm gains and biases).
Muon's updates have AdamW's root-mean-square size, so `--muon_lr` lives on AdamW's scale.
Both follow the one schedule of `lr_at`: every group's rate is the schedule's times its own `lr_scale`.
"""

from __future__ import annotations

import torch

from gpt.config import TrainConfig
from gpt.errors import GPTError
from gpt.model import GPT
from gpt.train.muon import Muon

OPTIMIZERS = ("adamw", "muon")


class Optimizers:
    """One or two torch optimizers over disjoint parameters, stepped, scaled and saved together."""

    def __init__(self, model: GPT, t: TrainConfig, fused: bool = False):
        hidden = [p for p in model.h.parameters() if p.dim() == 2] if t.optimizer == "muon" else []
        taken = {id(p) for p in hidden}
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in taken], "lr_scale": 1.0}
                  for g in model.optimizer_groups(t.weight_decay)]
        self.parts = [torch.optim.AdamW(groups, lr=t.learning_rate, betas=(t.beta1, t.beta2), fused=fused)]
        if hidden:
            scale = t.muon_lr / t.learning_rate if t.learning_rate else 0.0
            self.parts.append(Muon([{"params": hidden, "lr_scale": scale}], lr=t.muon_lr,
                                   weight_decay=t.weight_decay))

    def use_dtype(self, dtype: torch.dtype) -> None:
        """Muon's Newton-Schulz iteration runs in the run's autocast dtype (bfloat16 only where it is fast)."""
        for opt in self.parts:
            if isinstance(opt, Muon):
                opt.ns_dtype = dtype

    def set_lr(self, lr: float) -> None:
        for opt in self.parts:
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)

    def step(self, scaler: torch.amp.GradScaler) -> None:
        for opt in self.parts:
            scaler.step(opt)

    def unscale_(self, scaler: torch.amp.GradScaler) -> None:
        for opt in self.parts:
            scaler.unscale_(opt)

    def zero_grad(self) -> None:
        for opt in self.parts:
            opt.zero_grad(set_to_none=True)

    def state_dict(self) -> list[dict]:
        return [opt.state_dict() for opt in self.parts]

    def load_state_dict(self, states: list[dict] | dict) -> None:
        """A list per optimizer (a state saved before Muon existed is one AdamW's dict)."""
        states = [states] if isinstance(states, dict) else states
        if len(states) != len(self.parts):
            raise GPTError(f"the saved optimizer state has {len(states)} part(s), --optimizer needs "
                           f"{len(self.parts)}: resume with the optimizer the run started with")
        for opt, state in zip(self.parts, states, strict=True):
            opt.load_state_dict(state)
