"""From a model and a prompt to the report directory: figures, index.html and (optionally) inspect.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from gpt.fsutil import atomic_write_text
from gpt.inspect import analysis, figures
from gpt.inspect.capture import layer_norm_names, trace
from gpt.inspect.findings import Findings
from gpt.inspect.page import render
from gpt.model import GPT
from gpt.tokenizer import CharTokenizer

FIGURES = {
    "attention": "attention.png",
    "habits": "habit_heads.png",
    "embedding": "embedding.png",
    "logit_lens": "logit_lens.png",
    "true_next": "true_next.png",
    "norms": "residual_norms.png",
}
JSON_NAME = "inspect.json"
INIT_SEED = 0  # the untrained model of --compare-init: the same map on every run


def analyse(model: GPT, tokenizer: CharTokenizer, prompt: str, layers: list[int], heads: list[int],
            compare_init: bool, top_k: int = 5) -> Findings:
    ids = tokenizer.encode(prompt)
    t = trace(model, ids)
    lens = analysis.logit_lens(model, t)
    embedding = [("trained token embeddings", analysis.pca_2d(model.wte.weight.detach().cpu()))]
    if compare_init:
        with torch.random.fork_rng(devices=[]):  # a fresh model, the caller's random state untouched
            torch.manual_seed(INIT_SEED)
            untrained = GPT(model.config).wte.weight.detach()
        embedding.insert(0, ("untrained (random initialisation)", analysis.pca_2d(untrained)))
    before, after = analysis.stream_norms(t)
    return Findings(
        prompt=prompt, itos=tokenizer.itos, trace=t, layers=layers, heads=heads,
        depths=analysis.depth_names(model.config.n_layer),
        lens_top=[analysis.top_next(depth, tokenizer.itos, top_k) for depth in lens],
        final_top=analysis.top_next(torch.softmax(t.logits, dim=-1), tokenizer.itos, top_k),
        true_next=analysis.true_next_probability(lens, ids),
        attended=analysis.attended_most(t.attention),
        habits=analysis.head_habits(t.attention, list(prompt)),
        embedding=embedding, norms_before=before, norms_after=after,
        layer_norms=layer_norm_names(model.config.n_layer),
    )


def draw(f: Findings, out: Path) -> dict[str, Path]:
    chars = f.chars
    return {
        "attention": figures.attention_maps(f.trace.attention, chars, f.layers, f.heads, out / FIGURES["attention"]),
        "habits": figures.habit_heads(f.trace.attention, chars, analysis.strongest_heads(f.habits),
                                      out / FIGURES["habits"]),
        "embedding": figures.embedding_maps(f.embedding, f.itos, out / FIGURES["embedding"]),
        "logit_lens": figures.logit_lens_grid([[top[0] for top in depth] for depth in f.lens_top], f.depths, chars,
                                              out / FIGURES["logit_lens"]),
        "true_next": figures.true_next_by_depth(f.true_next, f.depths, chars, out / FIGURES["true_next"]),
        "norms": figures.residual_norms(f.norms_before, f.norms_after, f.layer_norms, chars, out / FIGURES["norms"]),
    }


def _rounded(t: torch.Tensor) -> list:
    return torch.round(t.double(), decimals=5).tolist()  # float64: 0.12549, not 0.12548999488353729


def as_json(f: Findings, checkpoint: str) -> dict:
    return {
        "checkpoint": checkpoint,
        "prompt": f.prompt,
        "attention": {
            "layers": f.layers, "heads": f.heads,
            "weights": _rounded(f.trace.attention[f.layers][:, f.heads]),  # [layer][head][query][key]
            "attended_most": f.attended.tolist(),  # [layer][position] -> key position (mean over heads)
            "habits": analysis.HABITS,
            "head_habits": [[[None if math.isnan(v) else v for v in head] for head in layer]  # None: no target
                            for layer in _rounded(f.habits)],  # [layer][head][habit]: mean weight on its target
        },
        "logit_lens": {
            "depths": f.depths,
            "top": f.lens_top,  # [depth][position] -> [[char, probability], ...]
            "true_next_probability": _rounded(f.true_next),  # [depth][position < T-1]
        },
        "final_top_k": f.final_top,
        "embedding": {
            "chars": f.itos,
            "classes": [analysis.char_class(c) for c in f.itos],
            "maps": [{"title": title, "points": _rounded(p.points), "explained_variance": list(p.explained)}
                     for title, p in f.embedding],
        },
        "residual_norms": {
            "layer_norms": f.layer_norms,
            "before": _rounded(f.norms_before),  # [layer norm][position]
            "after": _rounded(f.norms_after),
        },
    }


def write_report(f: Findings, out: Path, checkpoint: str, with_json: bool) -> list[Path]:
    """Write the figures, index.html and, with `with_json`, inspect.json into `out` (an existing directory)."""
    paths = draw(f, out)
    index = out / "index.html"
    atomic_write_text(index, render(f, {name: p.name for name, p in paths.items()}, checkpoint))
    written = [*paths.values(), index]
    if with_json:
        atomic_write_text(out / JSON_NAME, json.dumps(as_json(f, checkpoint), ensure_ascii=False, allow_nan=False))
        written.append(out / JSON_NAME)
    return written
