"""The results tables of the documentation and the README, made from bench/results/ by `make generated`.

A page asks for a table by name (a `<!-- generated: results NAME ARG -->` block, see docsgen/generated.py);
`render` returns its Markdown: the figures, then the line that says where they come from (machine, date,
command, file). Tables that mix result files give each row its own machine, date and command. Nothing here
holds a number, and a benchmark's own table comes from its module in bench/reports/, which the benchmark's
command writes with too. The headline (the README and the docs' index) is the newest scoreboard's
(bench/reports/scoreboard.py), its history one row per machine kind; the GPU's headline rows are a table apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bench.harness.plan import BACKEND_LABELS, DECODE_BACKENDS, DEFAULT_PRESETS
from bench.harness.results_files import ResultFile, ResultsError
from bench.reports import bench_run, cluster, scoreboard, serving, speculative, step_cost, training
from bench.reports.markdown import cell, fmt
from bench.reports.runs import Results

Link = Callable[[str], str]  # a result file's name -> the link to it from the page being built


def source(f: ResultFile, link: Link) -> str:
    note = f" ({f.data['note']})" if f.data.get("note") else ""
    return (f"<small>Measured on {f.machine}, {f.date}, by `{f.command}`{note}; "
            f"[{f.name.split('/')[-1]}.json]({link(f.name)})</small>")


def provenance_table(header: list[str], rows: list[tuple[list[str], ResultFile, dict]], link: Link) -> str:
    """Rows of figures, each with the machine, date and command that made it (a row may override its file's)."""
    lines = ["| " + " | ".join([*header, "machine", "date", "command"]) + " |",
             "|" + "---|" * (len(header) + 3)]
    for cells, f, row in rows:
        machine, date, command = (row.get(k, getattr(f, k)) for k in ("machine", "date", "command"))
        lines.append("| " + " | ".join([*map(cell, cells), cell(machine), f"[{date}]({link(f.name)})",
                                        f"`{cell(command)}`"]) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- tables


def figures(files: dict[str, ResultFile], link: Link, name: str) -> str:
    """A hand-recorded file (bench/results/hand-recorded/): figure, value, and where each was measured."""
    f = need(files, name)
    extra = [k for k in ("kept",) if any(k in r for r in f.rows)]
    rows = [([r["figure"], r["value"], *(r.get(k, "") for k in extra)], f, r) for r in f.rows]
    labels = [f.data.get("labels", {}).get(k, k) for k in extra]
    return (provenance_table(["figure", "value", *labels], rows, link) + "\n\n"
            f"<small>{cell(f.data.get('source', ''))}: [{f.name.split('/')[-1]}.json]({link(f.name)})</small>")


def decode(files: dict[str, ResultFile], link: Link, name: str) -> str:
    """tokens/s per backend (rows) and preset (columns) at batch 1 (batch 8), 64-char prompt + 500 new tokens."""
    f = need(files, name)
    d = Results(f.path).decode()
    presets = [p for p in DEFAULT_PRESETS + ("large",) if any(k[0] == p for k in d)]
    n = max(k[2] for k in d)
    lines = ["| tokens/s, batch 1 (batch 8) | " + " | ".join(f"`{p}`" for p in presets) + " |",
             "|---|" + "---:|" * len(presets)]
    for backend in DECODE_BACKENDS:
        if not any(k[3] == backend and k[2] == n for k in d):
            continue
        cells = []
        for p in presets:
            one, eight = (d.get((p, b, n, backend), {}).get("tokens_per_s") for b in (1, 8))
            cells.append(fmt(one) + (f" ({fmt(eight)})" if eight else "") if one else "–")
        lines.append(f"| {BACKEND_LABELS[backend]} | " + " | ".join(cells) + " |")
    note = f"{n} new tokens after a 64-character prompt, greedy, random weights."
    return "\n".join(lines) + f"\n\n{note}  \n" + source(f, link)


def bench_report(files: dict[str, ResultFile], link: Link, name: str) -> str:
    """bench.report's sections of a `make bench` run (targets, decode, prefill, training, hardware)."""
    f = need(files, name)
    r = Results(f.path)
    body = "\n\n".join(re.sub(r"^### ", "#### ", p, flags=re.M) for p in bench_run.sections(r))
    return bench_run.header(r) + "\n\n" + body + "\n\n" + source(f, link)


def serving_table(files: dict[str, ResultFile], link: Link, name: str) -> str:
    """bench.serving: the server under each concurrency, beside `gpt.sample` batch 1."""
    f = need(files, name)
    return serving.markdown(f.data).strip() + "\n\n" + source(f, link)


def cluster_table(files: dict[str, ResultFile], link: Link, name: str) -> str:
    """bench.cluster: one process beside Ray Serve's replicas, and the proxy's cost."""
    f = need(files, name)
    return cluster.markdown(f.data).strip() + "\n\n" + source(f, link)


def speculative_tables(files: dict[str, ResultFile], link: Link, name: str, targets: str = "") -> str:
    """bench.speculative's tables; `targets` (cpu, shakespeare) adds issue 32's targets against the figures."""
    f = need(files, name)
    return speculative.tables(f.data, targets).strip() + "\n\n" + source(f, link)


def step_cost_table(files: dict[str, ResultFile], link: Link, name: str) -> str:
    """bench.step_cost: a decode step itemised, a column per model shape."""
    f = need(files, name)
    return step_cost.tables(f.data).strip() + "\n\n" + source(f, link)


def recipes(files: dict[str, ResultFile], link: Link, name: str) -> str:
    """bench.recipes: one gpt.train run per variant."""
    f = need(files, name)
    return training.recipes_table(f.rows) + "\n\n" + source(f, link)


def budget_load(files: dict[str, ResultFile], link: Link, name: str) -> str:
    """bench.budget_load: the demo's training beside each scripted load."""
    f = need(files, name)
    return training.budget_table(f.rows) + "\n\n" + source(f, link)


def attention(files: dict[str, ResultFile], link: Link, name: str) -> str:
    """The CUDA attention benchmark: TFLOP/s and ms per backend and mode, and the training step per backend."""
    f = need(files, name)
    speed: dict[tuple, dict] = {}
    steps = []
    for b in Results(f.path).rows:
        if "shape" in b.get("params", {}):
            B, H, T, D = b["params"]["shape"]
            speed.setdefault((B, H, T, D, b["params"]["mode"]), {})[b["params"]["backend"]] = b
        elif "tokens_per_s" in b.get("extra_info", {}):
            steps.append(b)
    lines = ["| B × H × T × d | mode | triton | SDPA flash | naive | triton ÷ SDPA |", "|---|---|---:|---:|---:|---:|"]
    for (B, H, T, D, mode), by in sorted(speed.items()):
        shown = [f"{b['stats']['mean'] * 1e3:.3f} ms, {b['extra_info']['tflops']:.1f} TFLOP/s" if b else "–"
                 for b in (by.get(k) for k in ("triton", "sdpa", "naive"))]
        tri = by.get("triton")
        ratio = f"{tri['extra_info']['vs_sdpa']:.2f}×" if tri else "–"  # the benchmark's own ratio
        lines.append(f"| {B} × {H} × {T} × {D} | {mode} | {' | '.join(shown)} | {ratio} |")
    if steps:
        lines += ["", "| compiled `shakespeare` training step | tokens/s |", "|---|---:|"]
        lines += [f"| `--attention {b['param']}` | {b['extra_info']['tokens_per_s']:,} |" for b in steps]
    return "\n".join(lines) + "\n\n" + source(f, link)


# ------------------------------------------------------------------------------------------------ headline


def _figure(f: ResultFile, index: int) -> tuple[str, dict]:
    r = f.rows[index]
    return r["value"], r


def _attention_row(f: ResultFile) -> str:
    rows = {(b["params"]["shape"][1], b["params"]["backend"]): b for b in Results(f.path).rows
            if b.get("params", {}).get("mode") == "fwd+bwd"}
    h = max(k[0] for k in rows)
    tri = rows[h, "triton"]
    return (f"{tri['extra_info']['tflops']:.1f} TFLOP/s forward + backward (H = {h}), "
            f"{tri['extra_info']['vs_sdpa']:.2f}× the speed of SDPA flash")


# The GPU's headline rows, each with its own machine: (what, result file, value function returning text or
# (text, row overriding machine/date/command)). The CPU's come from the newest scoreboard (bench/reports/scoreboard.py).
GPU_HEADLINE: list[tuple[str, str, Callable[[ResultFile], object]]] = [
    ("`shakespeare` preset on one GPU: best val loss", "hand-recorded/h200-training", lambda f: _figure(f, 0)),
    ("our Triton attention kernel on an H200 (bf16, B 64, T 256, d 64)", "2026-11-26-h200/attention", _attention_row),
]


def gpu_headline(files: dict[str, ResultFile], link: Link) -> str:
    rows = []
    for what, name, value in GPU_HEADLINE:
        f = need(files, name)
        got = value(f)
        text, override = got if isinstance(got, tuple) else (got, {})
        rows.append(([what, text], f, override))
    return provenance_table(["what", "measured"], rows, link)


# --------------------------------------------------------------------------------------------------- lookup

TABLES: dict[str, Callable[..., str]] = {
    "figures": figures, "decode": decode, "report": bench_report, "serving": serving_table, "cluster": cluster_table,
    "recipes": recipes, "budget_load": budget_load, "attention": attention, "speculative": speculative_tables,
    "step_cost": step_cost_table, "headline": scoreboard.headline, "scoreboard_history": scoreboard.history,
    "gpu_headline": gpu_headline,
}


def need(files: dict[str, ResultFile], name: str) -> ResultFile:
    if name not in files:
        raise ResultsError(f"no result file bench/results/{name}.json (have: {', '.join(sorted(files))})")
    return files[name]


def render(kind: str, args: list[str], files: dict[str, ResultFile], link: Link) -> str:
    if kind not in TABLES:
        raise ResultsError(f"unknown results table {kind!r} (known: {', '.join(TABLES)})")
    return TABLES[kind](files, link, *args)
