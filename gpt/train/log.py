"""The training log (log.jsonl: one JSON row per evaluation, appended and fsynced) and its loss plot."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from gpt.fsutil import atomic_write_bytes, atomic_write_text

LOG = "log.jsonl"


def read_log(log_path: Path) -> list[dict]:
    """The log's rows; a torn last line (a kill mid-write) is skipped."""
    rows = []
    if log_path.is_file():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_log(log_path: Path, row: dict) -> None:
    """Appended, not replaced: a kill mid-write tears at most this last line, which read_log skips."""
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_log(log_path: Path, before_iter: float) -> None:
    """Keep the rows of iterations before `before_iter` (a resume redoes the rest); 0 empties the log."""
    rows = [r for r in read_log(log_path) if r.get("iter", float("inf")) < before_iter]
    atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in rows))


def plot_losses(log_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("train_loss", "val_loss"):
        ax.plot([r["iter"] for r in rows], [r[key] for r in rows], marker=".", label=key.replace("_", " "))
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(png_path, buf.getvalue())
