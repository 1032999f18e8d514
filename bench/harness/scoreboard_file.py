"""What a scoreboard file (`python -m bench.scoreboard`) must hold, checked in this one place: the README's and
the docs' headline tables are made from the newest such file, so a file that cannot say on what machine and by
what command each figure was measured stops the docs build (bench.harness.results_files.read calls `check` on
every result file whose `kind` is "scoreboard").

    {"kind": "scoreboard", "machine": "2-core AMD EPYC 9B14", "date": "YYYY-MM-DD", "command": "...",
     "commit": "ab76f4f", "cpu": {"model": ..., "cores": 2, "logical_cpus": 2, "flags": ["avx2", ...]},
     "versions": {"python": ..., "torch": ..., "onnxruntime": ..., "onnxruntime-genai": ...},
     "rows": [{"id", "label", "what", "status", "command", and for a figure: "value", "values", "unit", "how";
               for a skipped row: "why"}]}

`status` is "measured" (in this run), "read" (from a file the demo wrote, e.g. out/config.json) or "skipped".
Torch-free, and it imports nothing of the project: the errors are plain text that the reader prefixes with the
file's path.
"""

from __future__ import annotations

KIND = "scoreboard"
STATUSES = ("measured", "read", "skipped")
CPU_FIELDS = {"model": str, "cores": int, "logical_cpus": int, "flags": list}
ROW_FIELDS = ("id", "label", "what", "status", "command")
FIGURE_FIELDS = {"value": str, "values": dict, "unit": str, "how": str}


class ScoreboardError(ValueError):
    """A scoreboard file that lacks a field; the message names the field (and the row)."""


def _text(d: dict, key: str) -> bool:
    return isinstance(d.get(key), str) and bool(d[key].strip())


def check(data: dict) -> None:
    """Raise ScoreboardError naming the first missing or malformed field of a scoreboard file's `data`."""
    if not _text(data, "machine"):
        raise ScoreboardError("has no machine")
    cpu = data.get("cpu")
    if not isinstance(cpu, dict):
        raise ScoreboardError("has no machine details (cpu: model, cores, logical_cpus, flags)")
    for key, kind in CPU_FIELDS.items():
        if not isinstance(cpu.get(key), kind) or cpu[key] in ("", 0):
            raise ScoreboardError(f"has no cpu.{key} (the machine's {key.replace('_', ' ')})")
    for key in ("command", "commit"):
        if not _text(data, key):
            raise ScoreboardError(f"has no {key}")
    if not isinstance(data.get("versions"), dict) or not data["versions"]:
        raise ScoreboardError("has no versions")
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ScoreboardError("has no rows")
    for i, row in enumerate(rows):
        name = f"row {i + 1} ({row.get('id', '?')})" if isinstance(row, dict) else f"row {i + 1}"
        if not isinstance(row, dict):
            raise ScoreboardError(f"{name} is not an object")
        missing = [k for k in ROW_FIELDS if not _text(row, k)]
        if missing:
            raise ScoreboardError(f"{name} has no {missing[0]}")
        if row["status"] not in STATUSES:
            raise ScoreboardError(f"{name}: status must be one of {', '.join(STATUSES)}, got {row['status']!r}")
        needed = {"why": str} if row["status"] == "skipped" else FIGURE_FIELDS
        for key, kind in needed.items():
            if not isinstance(row.get(key), kind) or not row[key]:
                raise ScoreboardError(f"{name} has no {key}")
