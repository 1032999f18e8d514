"""Markdown tables and a bar chart from a pytest-benchmark JSON written by `make bench`.

    python -m bench.report bench/results/2026-11-25-intel-xeon-processor.json   # prints the tables, writes .md + .png
    python -m bench.report --new-path                                            # an unused results path for today

Every number comes from the JSON: tokens/s = batch x new tokens ÷ the median round; the memory-bound limit of
a decode figure = batch x bandwidth ÷ (weight bytes + batch x KV bytes at the run's average context), with the
bandwidth measured in the same run (DRAM: the 2 GiB read; in-cache: the read-bandwidth curve at the figure's
own working set, since weights of a few MB to a few hundred MB can stay in a large L3).
"""

from __future__ import annotations

import re
import sys
from datetime import date
from pathlib import Path

from bench.harness.machine import cpu_model
from bench.harness.results_files import RESULTS, publish
from bench.reports.bench_run import markdown
from bench.reports.chart import chart
from bench.reports.runs import Results
from gpt.errors import ArgumentParser


def new_path(suffix: str = "") -> Path:
    """bench/results/DATE-CPU`suffix`.json, with -2, -3, ... where that is taken."""
    slug = re.sub(r"\((r|tm)\)", "", cpu_model().lower())
    slug = re.sub(r"[^a-z0-9]+", "-", slug).strip("-") or "cpu"
    stem = f"{date.today().isoformat()}-{slug}{suffix}"
    path, k = RESULTS / f"{stem}.json", 2
    while path.exists():
        path, k = RESULTS / f"{stem}-{k}.json", k + 1
    return path


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.report", description=__doc__)
    p.add_argument("json", nargs="?", type=Path, help="pytest-benchmark JSON (from --benchmark-json)")
    p.add_argument("--new-path", action="store_true", help="print an unused bench/results path for today and exit")
    p.add_argument("--no-chart", action="store_true")
    args = p.parse_args(argv)
    if args.new_path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = new_path()
        print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
        return 0
    if args.json is None or not args.json.is_file():
        p.error(f"results JSON {args.json} not found (run `make bench`)")
    r = Results(args.json)
    publish(None, args.json, markdown(r), None if args.no_chart else lambda png: chart(r, png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
