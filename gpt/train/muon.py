"""Muon (MomentUm Orthogonalized by Newton-Schulz), written out so it can be read, and run in float32.

Each hidden matrix W gets momentum, as in SGD, but the step is not the momentum itself: it is the momentum
with all of its singular values pushed to ~1 (an approximate U Vᵀ of U S Vᵀ), so every direction the
gradient points to moves by about the same amount instead of the few largest dominating. Five steps of a
quintic Newton-Schulz iteration compute it with matmuls only.

torch.optim.Muon (torch 2.13) runs that iteration in bfloat16, always. On a CPU without bf16 units (no AMX,
no AVX512-BF16) each of those small matmuls is emulated: a `cpu`-preset step took ~4.5 s instead of AdamW's
~0.75 s on a 2-core EPYC VM. This is the same algorithm (coefficients, Nesterov momentum, decoupled weight
decay, the "match_rms_adamw" step size; tests/test_train.py checks it against torch's step in bfloat16) with
the iteration's dtype a parameter: gpt.train passes the run's autocast dtype.
"""

from __future__ import annotations

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Keller Jordan's: the steepest slope at 0 that still converges


def orthogonalize(g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32,
                  eps: float = 1e-7) -> torch.Tensor:
    """~U Vᵀ for g = U S Vᵀ (singular values land in ~[0.7, 1.2], which trains as well as exactly 1)."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the wide orientation: the Gram matrix x xᵀ is then the smaller one
        x = x.T
    x = x / x.norm().clamp(min=eps)  # Frobenius norm >= spectral norm: every singular value now <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)  # a x + (b A + c A²) x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for 2-D weights. The step of an (n, m) matrix is lr · 0.2 · sqrt(max(n, m)) times the
    orthogonalized momentum, which gives it the root-mean-square size of an AdamW step ("match_rms_adamw"),
    so lr lives on AdamW's scale."""

    def __init__(self, params, lr: float, weight_decay: float = 0.1, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, ns_dtype: torch.dtype = torch.float32):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                  "nesterov": nesterov, "ns_steps": ns_steps})
        self.ns_dtype = ns_dtype  # the Newton-Schulz iteration's dtype (a choice of the run, not saved state)
        for group in self.param_groups:
            if any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon takes 2-D weights only")

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                update = orthogonalize(update, group["ns_steps"], self.ns_dtype)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-group["lr"] * 0.2 * math.sqrt(max(p.shape)))
