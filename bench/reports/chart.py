"""The charts of the results: `pyplot` and `save` for every one, and the bar chart of a bench run: decode tokens/s
per backend and batch (log scale, with the memory-bound limits as dashed lines) beside the training tokens/s per
variant, one row of panels per preset."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from bench.harness.plan import BACKEND_LABELS, BASELINE, DECODE_BACKENDS
from bench.reports.runs import Results, baseline, presets_in


def pyplot() -> ModuleType:
    """matplotlib.pyplot drawing to files only (the Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=110)
    pyplot().close(fig)


def chart(r: Results, png: Path) -> bool:
    """The decode (and training) bar chart; False when the results hold no decode figures."""
    plt = pyplot()
    d = r.decode()
    presets = [p for p in presets_in(r) if any(k[0] == p for k in d)]
    if not presets:
        return False
    n_max = max(k[2] for k in d)
    backends = [b for b in DECODE_BACKENDS if any(k[3] == b for k in d)]
    batches = sorted({k[1] for k in d})
    train = r.by_kind.get("train", [])
    fig, axes = plt.subplots(len(presets), 2, figsize=(13, 3.6 * len(presets)), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2, 1]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, p in enumerate(presets):
        ax = axes[i][0]
        width = 0.8 / len(backends)
        for j, backend in enumerate(backends):
            xs = [bi + (j - (len(backends) - 1) / 2) * width for bi in range(len(batches))]
            ys = [(baseline(d, p, b, n_max)[0] if backend == BASELINE
                   else d.get((p, b, n_max, backend), {}).get("tokens_per_s")) or 0 for b in batches]
            bars = ax.bar(xs, ys, width, label=BACKEND_LABELS[backend], color=colors[j % len(colors)])
            for bar, y in zip(bars, ys, strict=True):
                if y:
                    ax.annotate(f"{y:,.0f}", (bar.get_x() + bar.get_width() / 2, y), ha="center", va="bottom",
                                fontsize=7, rotation=90, xytext=(0, 2), textcoords="offset points")
        for bi, b in enumerate(batches):
            row = d.get((p, b, n_max, "ort-fp32")) or d.get((p, b, n_max, "eager-kv"))
            for key, style, label in (("limit_dram", "--", "fp32 memory-bound limit (DRAM)"),
                                      ("limit_cache", ":", "fp32 memory-bound limit (in-cache)")):
                if row and row.get(key):
                    ax.hlines(row[key], bi - 0.45, bi + 0.45, colors="k", linestyles=style,
                              label=label if bi == 0 else None)
        ax.set_yscale("log")
        ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
        ax.set_ylabel("tokens/s (log)")
        ax.set_title(f"{p}: decode, 64-char prompt + {n_max} tokens")
        ax.grid(axis="y", alpha=0.3, which="both")
        if i == 0:
            handles, labels = ax.get_legend_handles_labels()
        ax = axes[i][1]
        rows = [b for b in train if b["extra_info"]["preset"] == p]
        names = [b["extra_info"]["variant"] for b in rows]
        vals = [b["extra_info"]["tokens_per_step"] / b["stats"]["median"] for b in rows]
        bars = ax.barh(names, vals, color=[colors[k % len(colors)] for k in range(len(vals))])
        for bar, v in zip(bars, vals, strict=True):
            ax.annotate(f"{v:,.0f}", (v, bar.get_y() + bar.get_height() / 2), va="center", fontsize=8,
                        xytext=(2, 0), textcoords="offset points")
        ax.invert_yaxis()
        ax.set_xlabel("training tokens/s")
        ax.set_title(f"{p}: train step" + (f" (batch {rows[0]['extra_info']['batch']})" if rows else ""))
        ax.grid(axis="x", alpha=0.3)
    m, b = r.machine, r.bench
    fig.suptitle(f"{m.get('cpu_model', '?')}, {b.get('threads', '?')} threads, {r.data.get('datetime', '')[:10]}"
                 + ("" if b.get("quiet") else " (machine under load: noisy)")
                 + (" SMOKE RUN" if b.get("smoke") else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0.09 / len(presets), 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    save(fig, png)
    return True
