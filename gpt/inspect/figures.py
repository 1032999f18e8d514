"""The report's PNG figures. Each function draws numbers it is given and writes one file.

Matplotlib's object API (`Figure`, no pyplot) so nothing global (backend, open figures) is touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from gpt.inspect.analysis import CHAR_CLASSES, Habit, Projection, char_class, shown

DPI = 90
CLASS_COLOURS = dict(zip(CHAR_CLASSES, ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f"),
                         strict=True))


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _char_ticks(ax, chars: list[str], axis: str = "both") -> None:
    """Every character as a tick label while they fit; every n-th beyond that."""
    step = max(1, len(chars) // 40)
    positions = list(range(0, len(chars), step))
    labels = [shown(chars[i]) for i in positions]
    size = 9 if len(chars) <= 16 else 8 if len(chars) <= 24 else 7
    if axis in ("both", "x"):
        ax.set_xticks(positions, labels, fontsize=size)
    if axis in ("both", "y"):
        ax.set_yticks(positions, labels, fontsize=size)


def _heatmaps(panels: list[list[tuple[str, torch.Tensor]]], chars: list[str], path: Path) -> Path:
    """A grid of [query, key] heatmaps, one per (title, weights), row by row (a short last row leaves its end
    empty); the masked upper triangle is left blank (NaN)."""
    T = len(chars)
    rows, cols = len(panels), len(panels[0])
    cell = min(max(2.4, 0.18 * T), 5.5)  # inches per heatmap: long prompts get thinner rows, not huge files
    fig = Figure(figsize=(cell * cols + 1.0, cell * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)  # outer tick labels
    above_diagonal = torch.ones(T, T, dtype=torch.bool).triu(1)
    cmap = colormaps["viridis"].with_extremes(bad="white")  # masked (future) keys: white, not a weight colour
    image = None
    for ax in axes[-1, len(panels[-1]):]:
        ax.set_axis_off()
    for r, row in enumerate(panels):
        for c, (title, weights) in enumerate(row):
            ax = axes[r, c]
            image = ax.imshow(weights.masked_fill(above_diagonal, float("nan")).numpy(), cmap=cmap, vmin=0.0, vmax=1.0)
            ax.set_title(title, fontsize=10)
            if c == 0:
                ax.set_ylabel("query (reading)")
            if r == rows - 1:
                ax.set_xlabel("key (looked at)")
    _char_ticks(axes[-1, 0], chars)  # the axes are shared: this labels every heatmap's ticks
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    return _save(fig, path)


def attention_maps(attention: torch.Tensor, chars: list[str], layers: list[int], heads: list[int],
                   path: Path) -> Path:
    """A layers × heads grid of heatmaps."""
    return _heatmaps([[(f"layer {layer}, head {head}", attention[layer, head]) for head in heads]
                      for layer in layers], chars, path)


def habit_heads(attention: torch.Tensor, chars: list[str], found: list[Habit], path: Path) -> Path:
    """One heatmap per habit, three to a row: the head that shows it most, from whichever layer it lives in."""
    panels = [(f"{h.name}: layer {h.layer}, head {h.head}", attention[h.layer, h.head]) for h in found]
    return _heatmaps([panels[i:i + 3] for i in range(0, len(panels), 3)], chars, path)


def embedding_maps(maps: list[tuple[str, Projection]], itos: list[str], path: Path) -> Path:
    """One PCA scatter per (title, projection), side by side; each point labelled and coloured by class."""
    fig = Figure(figsize=(6.0 * len(maps), 5.6), layout="constrained")
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    colours = [CLASS_COLOURS[char_class(c)] for c in itos]
    for ax, (title, projection) in zip(axes, maps, strict=True):
        x, y = projection.points[:, 0].numpy(), projection.points[:, 1].numpy()
        ax.scatter(x, y, c=colours, s=14, alpha=0.5)
        for c, xi, yi, colour in zip(itos, x, y, colours, strict=True):
            ax.annotate(shown(c), (xi, yi), color=colour, fontsize=10, ha="center", va="bottom",
                        xytext=(0, 2), textcoords="offset points")
        first, second = projection.explained
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(f"PC 1 ({first:.0%} of variance)")
        ax.set_ylabel(f"PC 2 ({second:.0%} of variance)")
    handles = [axes[0].scatter([], [], color=colour, label=name) for name, colour in CLASS_COLOURS.items()]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    return _save(fig, path)


def logit_lens_grid(top1: list[list[tuple[str, float]]], depths: list[str], chars: list[str], path: Path) -> Path:
    """Depth × position: the likeliest next character at each depth, shaded by its probability."""
    probs = np.array([[p for _, p in row] for row in top1])
    T = len(chars)
    fig = Figure(figsize=(min(max(4.0, 0.5 * T + 2.0), 26.0), 0.5 * len(depths) + 1.6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(probs, cmap="Greens", vmin=0.0, vmax=1.0, aspect="auto")
    for d, row in enumerate(top1):
        for t, (c, p) in enumerate(row):
            ax.text(t, d, shown(c), ha="center", va="center", fontsize=10 if T <= 24 else 7 if T <= 64 else 5,
                    color="white" if p > 0.6 else "black")
    _char_ticks(ax, chars, axis="x")
    ax.set_yticks(range(len(depths)), depths)
    ax.set_xlabel("position (the character just read)")
    truth = ax.secondary_xaxis("top")
    _char_ticks(truth, chars[1:] + ["?"], axis="x")
    truth.set_xlabel("the character that really follows", fontsize=9)
    fig.colorbar(image, ax=ax, label="probability", shrink=0.8)
    return _save(fig, path)


def true_next_by_depth(probability: torch.Tensor, depths: list[str], chars: list[str], path: Path) -> Path:
    """One line per prompt position (the probability of the character that really follows), and their mean."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(depths))
    n = probability.size(1)
    colours = colormaps["viridis"](np.linspace(0.0, 0.9, max(n, 1)))
    few = n <= 20  # few enough lines to tell apart: name each one in the legend
    for t in range(n):
        label = f"{shown(chars[t])} → {shown(chars[t + 1])}" if few else None
        ax.plot(x, probability[:, t].numpy(), color=colours[t], alpha=0.6 if few else 0.25, lw=1,
                marker="." if few else None, label=label)
    ax.plot(x, probability.mean(dim=1).numpy(), color="black", lw=2.5, label="mean")
    ax.set_xticks(x, depths)
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("probability of the true next character")
    ax.set_xlabel("read out after")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    return _save(fig, path)


def residual_norms(before: torch.Tensor, after: torch.Tensor, names: list[str], chars: list[str],
                 path: Path) -> Path:
    """Two LayerNorm × position heatmaps of the L2 norm, on one logarithmic colour scale so the spread on the
    left and the evenness on the right compare: the residual stream entering each LayerNorm, and its output."""
    T = len(chars)
    fig = Figure(figsize=(2 * max(3.5, 0.3 * T + 2.0), 0.35 * len(names) + 1.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    scale = LogNorm(float(min(before.min(), after.min())), float(max(before.max(), after.max())))
    for ax, norms, title in zip(axes, (before, after), ("residual stream entering the LayerNorm",
                                                         "LayerNorm output"), strict=True):
        image = ax.imshow(norms.numpy(), cmap="magma", norm=scale, aspect="auto")
        _char_ticks(ax, chars, axis="x")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("position")
    axes[0].set_yticks(range(len(names)), names)
    fig.colorbar(image, ax=axes, label="L2 norm", shrink=0.8)
    return _save(fig, path)
