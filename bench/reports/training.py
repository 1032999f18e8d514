"""The training benchmarks' tables, for the files bench.recipes and bench.budget_load append to as each run ends
and for the documentation (bench.reports.tables): one row per run."""

from __future__ import annotations

from bench.reports.markdown import cell

# ------------------------------------------------------------------------------------------ bench.recipes

RECIPES_HEADER = "| variant | gpt.train options | val loss | iterations | wall |\n|---|---|---|---|---|\n"


def recipes_row(r: dict, strong: str = "**") -> str:
    """A recipe's run: its variant, options, val loss (in `strong` marks), iterations and wall time."""
    if "error" in r:
        return f"| {r['variant']} | `{' '.join(r['args'])}` | failed: {cell(r['error'])} | | |"
    return (f"| {r['variant']} | `{' '.join(r['args'])}` | {strong}{r['val_loss']:.4f}{strong} | {r['iters']} | "
            f"{r['wall_s']:.0f} s |")


def recipes_table(rows: list[dict]) -> str:
    """The documentation's table of a bench.recipes file."""
    return "\n".join(["| variant | gpt.train options | val loss (full pass) | iterations | wall |",
                      "|---|---|---:|---:|---:|", *(recipes_row(r, strong="") for r in rows)])


# -------------------------------------------------------------------------------------- bench.budget_load

BUDGET_HEADER = "| load | budget used | iterations | val loss | precision |\n|---|---:|---:|---:|---|\n"


def budget_row(r: dict) -> str:
    """A run under a load: the share of the budget it used, its iterations, val loss and precision."""
    if "error" in r:
        return f"| {r['variant']} | failed: {r['error']} | | | |"
    return (f"| {r['variant']} | {100 * r['used']:.1f} % ({r['wall_s']:.0f} s) | {r['iters']:,} | "
            f"**{r['val_loss']:.4f}** | {r['first_line'].split(', ')[5].split(' (')[0]} |")


def budget_table(rows: list[dict]) -> str:
    return BUDGET_HEADER + "\n".join(budget_row(r) for r in rows)
