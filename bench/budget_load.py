"""The time budget under load: `python -m bench.budget_load --budget 8m --out FILE.md [--loads NAME ...]`.

Each row is one `python -m gpt.train --preset cpu --time-budget B` run (`make demo`'s training) while a
scripted load runs beside it: `BUSY_PROCESSES` Python loops that spin (as another program on a laptop or a
shared box does) for a stretch of the run. The figures are what a user gets: the share of the budget the run
used (the wall time of the whole command over the budget), the iterations it trained, and the best model's
full-pass val loss. Runs go one after another; rows are appended to FILE.md (and FILE.json) as each ends.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from bench.harness.cli import add_options, command
from bench.harness.machine import cpu_model
from bench.harness.train_runs import Appended, length_args, run
from bench.reports.training import BUDGET_HEADER, budget_row
from gpt.errors import ArgumentParser, run_cli
from gpt.train.budget import parse_duration

BUSY_PROCESSES = 2  # as many as the machine's cores on the 2-core VMs this project is measured on
LOADS: dict[str, tuple[float, float | None] | None] = {  # (start, end) of the busy stretch in seconds from the
    "quiet": None,                                          # run's start; a negative start counts from the budget's
    "busy for the first minute": (0.0, 60.0),               # end; end None: until the run ends
    "busy for the last two minutes": (-120.0, None),
    "busy from 2 to 3 minutes": (120.0, 180.0),
}


class Load:
    """BUSY_PROCESSES spinning processes between `start` and `end` seconds (measured from now), always stopped."""

    def __init__(self, start: float, end: float):
        self.procs: list[subprocess.Popen] = []
        self.timers = [threading.Timer(start, self._start), threading.Timer(end, self.stop)]

    def _start(self) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BUSY_PROCESSES)]

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs = []

    def __enter__(self) -> Load:
        for t in self.timers:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for t in self.timers:
            t.cancel()
        self.stop()


def under_load(name: str, budget: str, data_dir: Path) -> dict:
    budget_s, stretch = parse_duration(budget), LOADS[name]
    length = length_args(budget)
    if stretch is None:
        result = run(name, [], length, data_dir)
    else:
        start = stretch[0] + budget_s if stretch[0] < 0 else stretch[0]
        end = 10 * budget_s if stretch[1] is None else stretch[1]
        with Load(start, end):
            result = run(name, [], length, data_dir)
        result["busy_s"] = [round(start), None if stretch[1] is None else round(end)]
    result["used"] = round(result["wall_s"] / budget_s, 4) if "wall_s" in result else None
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.budget_load", description=__doc__)
    p.add_argument("--budget", default="8m", help="each run's --time-budget (default 8m, the demo's)")
    p.add_argument("--loads", nargs="*", choices=list(LOADS), help="these load patterns only (default: all)")
    add_options(p, out="the markdown table to append to (and .json beside)", out_required=True, data_dir=True)
    args = p.parse_args(argv)
    parse_duration(args.budget)
    heading = (f"# The time budget under load ({args.budget} each, `cpu` preset)\n\nCPU: {cpu_model()}, 2 threads; "
               f"load: {BUSY_PROCESSES} spinning Python processes. Used: the command's wall time over the budget. "
               "Val loss: the best model's float32 full pass.\n\n" + BUDGET_HEADER)
    table = Appended(args.out, heading, command(p, argv))
    for name in args.loads or LOADS:
        result = under_load(name, args.budget, args.data_dir)
        table.add(result, budget_row(result))
    return 0


if __name__ == "__main__":
    run_cli(main)
