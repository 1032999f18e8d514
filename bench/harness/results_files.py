"""The result files in bench/results/ and where each came from: every figure the documentation shows is read
from one of them, never typed into a page.

Every `*.json` under bench/results/ names, at its top level, the `machine` it ran on, the `date` (YYYY-MM-DD)
and the `command` that wrote it; a file without them is refused (`ResultsError`), so the docs build fails
instead of showing a figure nobody can trace; a scoreboard file (`kind` "scoreboard") must also hold its
machine's details and every row's command (bench/harness/scoreboard_file.py). `stamp` adds the three to a report
as a benchmark writes it, and `publish` writes it with its Markdown and chart. Torch-free.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date as Date
from pathlib import Path

from bench.harness import scoreboard_file
from bench.harness.machine import this_machine

RESULTS = Path(__file__).resolve().parents[1] / "results"
PROVENANCE = ("machine", "date", "command")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}$")


class ResultsError(Exception):
    """A result file that cannot back a figure: missing, unreadable, or without its machine, date or command."""


@dataclass(frozen=True)
class ResultFile:
    name: str  # the path under bench/results/ without .json, e.g. "2026-12-01-amd-epyc-serving-cpu"
    path: Path
    machine: str
    date: str
    command: str
    data: dict

    @property
    def rows(self) -> list[dict]:
        return self.data.get("rows", [])


def read(path: Path, root: Path = RESULTS) -> ResultFile:
    path = Path(path)
    name = path.relative_to(root).with_suffix("").as_posix()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: cannot read it as JSON ({e})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: the top level must be an object with {', '.join(PROVENANCE)}")
    missing = [k for k in PROVENANCE if not isinstance(data.get(k), str) or not data[k].strip()]
    if missing:
        raise ResultsError(f"{path} has no {' / '.join(missing)}: every result file names the machine it ran on, "
                           "the date (YYYY-MM-DD) and the command that wrote it (bench.harness.results_files.stamp)")
    if not DATE.match(data["date"]):
        raise ResultsError(f"{path}: date must be YYYY-MM-DD, got {data['date']!r}")
    if data.get("kind") == scoreboard_file.KIND:
        try:
            scoreboard_file.check(data)
        except scoreboard_file.ScoreboardError as e:
            raise ResultsError(f"{path}: this scoreboard file {e} (bench.harness.scoreboard_file)") from None
    return ResultFile(name, path, data["machine"], data["date"], data["command"], data)


def read_all(root: Path = RESULTS) -> dict[str, ResultFile]:
    """Every result file under `root`, by name; the first one without its provenance raises ResultsError."""
    return {f.name: f for f in (read(p, root) for p in sorted(Path(root).rglob("*.json")))}


def command_line(prog: str | None = None, argv: list[str] | None = None) -> str:
    """The command as a user would type it: `python -m bench.serving --onnx ...` for a module run with -m."""
    argv = sys.argv[1:] if argv is None else argv
    if prog is None:
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        prog = f"python -m {spec.name.removesuffix('.__main__')}" if spec else f"python {sys.argv[0]}"
    return " ".join([prog, *map(shlex.quote, argv)])


def stamp(report: dict, command: str | None = None, machine: str | None = None) -> dict:
    """`report` with its provenance first: the machine, today's date and the command (default: this process's)."""
    return {"machine": machine or this_machine(), "date": Date.today().isoformat(),
            "command": command or command_line(), **report}


def publish(report: dict | None, out: Path | None, markdown: str, draw: Callable[[Path], object] | None = None) -> None:
    """A benchmark's ending: its `markdown` on stdout; with `out`, OUT.json (`report`; None where the file is there
    already, as pytest-benchmark wrote it), OUT.md (`markdown`) and OUT.png (`draw(path)`, unless it returns False:
    nothing to draw), then what it wrote, on stderr."""
    print(markdown)
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    written = []
    if report is not None:
        written.append(out.with_suffix(".json"))
        written[-1].write_text(json.dumps(report, indent=1))
    written.append(out.with_suffix(".md"))
    written[-1].write_text(markdown)
    if draw is not None and draw(out.with_suffix(".png")) is not False:
        written.append(out.with_suffix(".png"))
    print(f"wrote {', '.join(map(str, written))}", file=sys.stderr)
