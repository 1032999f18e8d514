"""The scoreboard's tables (`python -m bench.scoreboard`'s files, `kind` "scoreboard"): the run's own Markdown, the
headline table of the README and the docs (the newest file: one machine, one date, one commit) and the history
of the benchmarks page (the newest file of each machine kind, one row each, to compare CPUs). Torch-free."""

from __future__ import annotations

from collections.abc import Callable

from bench.harness.results_files import ResultFile
from bench.harness.scoreboard_file import KIND
from bench.reports.markdown import cell, table

Link = Callable[[str], str]
NONE_YET = ("No scoreboard yet: run `make scoreboard` (after `make demo`) and `make generated` to measure every "
            "headline figure on one machine.")


def measured(row: dict, how: bool = True) -> str:
    """The figure, or why it was skipped; a figure read from a file (not measured in the run) says so, unless `how`
    is a column of its own."""
    if row["status"] == "skipped":
        return f"skipped: {row['why']}"
    return row["value"] + (f" ({row['how']})" if how and row["status"] == "read" else "")


def caption(data: dict) -> str:
    v = data["versions"]
    shown = ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "onnxruntime", "onnxruntime-genai") if k in v)
    quick = " **with --quick: a smoke run, not a measurement**" if data.get("quick") else ""
    return (f"Measured on **{data['machine']}** on {data['date']}, commit `{data['commit']}`, {data['threads']} "
            f"thread(s), {shown}{quick}: each row by the command beside it")


def markdown(report: dict) -> str:
    """The run's own table (OUT.md), with how each figure was measured."""
    rows = [[cell(r["what"]), cell(measured(r, how=False)), cell(r.get("how", "")), f"`{cell(r['command'])}`"]
            for r in report["rows"]]
    return (f"## Scoreboard\n\n{caption(report)} (`{report['command']}`).\n\n"
            + table(["what", "measured", "how", "command"], rows, "llll") + "\n")


def scoreboards(files: dict[str, ResultFile]) -> list[ResultFile]:
    """The scoreboard files, oldest first (by date, then name)."""
    return sorted((f for f in files.values() if f.data.get("kind") == KIND), key=lambda f: (f.date, f.name))


def headline(files: dict[str, ResultFile], link: Link) -> str:
    """The newest scoreboard's rows: what, the figure (or why it was skipped), the command that reproduces it."""
    boards = scoreboards(files)
    if not boards:
        return NONE_YET
    f = boards[-1]
    rows = [[cell(r["what"]), cell(measured(r)), f"`{cell(r['command'])}`"] for r in f.rows]
    return (table(["what", "measured", "command"], rows, "lll") + "\n\n"
            f"<small>{caption(f.data)}; [{f.name.split('/')[-1]}.json]({link(f.name)})</small>")


def history(files: dict[str, ResultFile], link: Link) -> str:
    """One row per machine kind (CPU model and core count): its newest scoreboard, each figure in short."""
    newest: dict[str, ResultFile] = {}
    for f in scoreboards(files):
        cpu = f.data["cpu"]
        newest[f"{cpu['logical_cpus']}-core {cpu['model']}"] = f
    if not newest:
        return NONE_YET
    labels = list(dict.fromkeys(r["label"] for f in newest.values() for r in f.rows))
    rows = []
    for f in sorted(newest.values(), key=lambda f: (f.date, f.name), reverse=True):
        by = {r["label"]: r for r in f.rows}
        cells = [("–" if by[k]["status"] == "skipped" else by[k].get("short", by[k]["value"])) if k in by else ""
                 for k in labels]
        rows.append([cell(f.machine), f"[{f.date}]({link(f.name)})", f"`{f.data['commit']}`", *map(cell, cells)])
    return (table(["machine", "date", "commit", *labels], rows, "lll" + "r" * len(labels)) + "\n\n"
            "<small>The newest scoreboard of each machine kind (`python -m bench.scoreboard`); – : skipped there, "
            "the file says why.</small>")
