"""The presets table of the docs, from gpt.config.PRESETS: shape, block, parameters (counted on a model built on
torch's meta device, so nothing is allocated), training settings and what each preset is for."""

from __future__ import annotations


def table() -> str:
    import torch

    from gpt.config import PRESETS
    from gpt.model import GPT

    lines = ["| preset | layers × heads × width | block | parameters | dropout | batch | optimizer | budget | for |",
             "|---|---|---:|---:|---:|---:|---|---|---|"]
    for name, p in PRESETS.items():
        m, t = p.model, p.train
        with torch.device("meta"):
            params = GPT(m).num_params()
        budget = p.time_budget or f"{t.max_iters} iterations"
        lines.append(f"| `{name}` | {m.n_layer} × {m.n_head} × {m.n_embd} | {m.block_size} | {params / 1e6:.1f} M | "
                     f"{m.dropout:g} | {t.batch_size} | {t.optimizer} | {budget} | {p.description} |")
    return "\n".join(lines)
