"""Training runs as bench.recipes and bench.budget_load make them: one `python -m gpt.train --preset cpu` run at a
time (never two at once: they would share the cores), its outcome read back from what gpt.train wrote, and a
results table that grows by a row as each run ends (FILE.md, and FILE.json beside it), so a stopped search
keeps what it measured."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness.results_files import stamp
from gpt.errors import GPTError


def length_args(budget: str, iters: int | None = None) -> list[str]:
    """How long a run trains: the wall-time budget, or exactly `iters` iterations."""
    if iters is None:
        return ["--time-budget", budget]
    return ["--time-budget", "off", "--max_iters", str(iters), "--lr_decay_iters", str(iters)]


def run(name: str, args: list[str], length: list[str], data_dir: Path) -> dict:
    """One gpt.train run: its best full-pass val loss, iterations, wall time, plan lines and evaluations (`curve`:
    iteration, train and val estimate, seconds since start), or the last line of what it said on failing."""
    with tempfile.TemporaryDirectory() as out:
        start, started_at = time.perf_counter(), time.time()
        proc = subprocess.run([sys.executable, "-m", "gpt.train", "--preset", "cpu", *length,
                               "--data-dir", str(data_dir), "--out-dir", out, "--no-progress", *args],
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode:
            return {"variant": name, "args": args, "error": proc.stderr.strip().splitlines()[-1]}
        manifest = json.loads((Path(out) / "config.json").read_text())
        rows = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    plan = [line for line in proc.stdout.splitlines() if line.startswith("time budget")]
    return {"variant": name, "args": args, "val_loss": manifest["val_loss"], "best_iter": manifest["iter"],
            "iters": rows[-1]["max_iters"], "wall_s": round(wall, 1), "first_line": proc.stdout.splitlines()[0],
            "plan": plan[0] if plan else None, "budget_lines": plan,
            "precision_checks": [line for line in proc.stdout.splitlines() if line.startswith("precision checked")],
            "curve": [[r["iter"], round(r["train_loss"], 4), round(r["val_loss"], 4), round(r["time"] - started_at, 1)]
                      for r in rows]}


class Appended:
    """The table `out` (started with `heading` when new) and its result file OUT.json (stamped with this machine,
    today and `command` when new), each a row longer as a run ends."""

    def __init__(self, out: Path, heading: str, command: str):
        if not out.exists():
            out.write_text(heading)
        self.out, self.path = out, out.with_suffix(".json")
        self.results = stamp({"rows": []}, command)
        if self.path.exists():
            self.results = json.loads(self.path.read_text())
            if not isinstance(self.results, dict) or "rows" not in self.results:
                raise GPTError(f"{self.path} is not a result file of this command (an object with machine, date, "
                               "command, rows)")

    def add(self, result: dict, row: str) -> None:
        """Append a run's result to OUT.json and its table row to OUT.md, and print the row."""
        self.results["rows"].append(result)
        self.path.write_text(json.dumps(self.results, indent=1) + "\n")
        with self.out.open("a") as f:
            f.write(row + "\n")
        print(row, flush=True)
