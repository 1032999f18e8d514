"""Markdown pieces every report uses: numbers, ratios, table cells and tables."""

from __future__ import annotations

import math


def fmt(x: float | None, digits: int = 0, suffix: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}{suffix}"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}×" if a and b else "–"


def cell(text: object) -> str:
    """`text` as one table cell: its pipes escaped, its line breaks spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A Markdown table; `align` has an `l` or `r` per column (default: the first left, the others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(r) + " |" for r in [header, sep, *rows])
