"""Training recipes compared at equal wall time: `python -m bench.recipes --budget 8m --out FILE.md`.

Each variant is one `python -m gpt.train --preset cpu --time-budget B ...` run, one after another (never two
at once: they would share the cores). The figure is the best model's float32 full-pass val loss, the one
`gpt.train` prints at the end; the table also has the iterations the budget allowed and the wall time, and
FILE.json each run's plan and evaluations (`curve`: iteration, train and val estimate, seconds since start).
Rows are appended to FILE.md (and FILE.json) as each run ends, so a stopped search keeps what it measured.

`--iters N` trains every variant for exactly N iterations instead (no budget; the schedule decays over N).
A shared machine's pace drifts by tens of percent within an hour, so at equal wall time two runs of one recipe
can differ by hundreds of iterations; variants that do not change a step's cost (schedules, learning rates,
averaging) compare exactly at equal iterations, with the same seed and data order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import cpu_model
from bench.results_files import command_line, stamp
from gpt.errors import ArgumentParser, GPTError, run_cli

VARIANTS: dict[str, list[str]] = {
    # the 300 s study of 2026-11-26 (AdamW against Muon at the cpu preset's shape then)
    "adamw (preset before)": ["--optimizer", "adamw"],
    "muon 6e-3": ["--optimizer", "muon", "--muon_lr", "6e-3"],
    "muon 1e-2": ["--optimizer", "muon", "--muon_lr", "1e-2"],
    "muon 2e-2": ["--optimizer", "muon", "--muon_lr", "2e-2"],
    "muon 1e-2, warmup 20": ["--optimizer", "muon", "--muon_lr", "1e-2", "--warmup_iters", "20"],
    "muon 1e-2, adamw 4e-3": ["--optimizer", "muon", "--muon_lr", "1e-2", "--learning_rate", "4e-3",
                              "--min_lr", "4e-4"],
    "muon 1e-2, batch 16": ["--optimizer", "muon", "--muon_lr", "1e-2", "--batch_size", "16"],
    "muon 1e-2, 6 x 192": ["--optimizer", "muon", "--muon_lr", "1e-2", "--n_layer", "6"],
    # the 8-minute study (issue 31): the shape of a step, every option explicit
    "128 x 32 (preset before)": ["--block_size", "128", "--batch_size", "32"],
    "256 x 16": ["--block_size", "256", "--batch_size", "16"],
    "256 x 16 (preset before: cosine to 2e-4)": ["--block_size", "256", "--batch_size", "16", "--lr_schedule", "cosine",
                                                 "--min_lr", "2e-4"],
    "256 x 24": ["--block_size", "256", "--batch_size", "24"],
    "512 x 8": ["--block_size", "512", "--batch_size", "8"],
    "256 x 16, wsd": ["--block_size", "256", "--batch_size", "16", "--lr_schedule", "wsd"],
    "256 x 16, ema 0.99": ["--block_size", "256", "--batch_size", "16", "--ema_decay", "0.99"],
    "256 x 16, muon 2e-2": ["--block_size", "256", "--batch_size", "16", "--muon_lr", "2e-2"],
    "256 x 16, muon 5e-3": ["--block_size", "256", "--batch_size", "16", "--muon_lr", "5e-3"],
    "256 x 16, dropout 0.1": ["--block_size", "256", "--batch_size", "16", "--dropout", "0.1"],
    "256 x 16, adamw 3e-3": ["--block_size", "256", "--batch_size", "16", "--learning_rate", "3e-3",
                             "--min_lr", "3e-4"],
    "256 x 16, wsd to 2e-5": ["--block_size", "256", "--batch_size", "16", "--lr_schedule", "wsd", "--min_lr", "2e-5"],
    "256 x 16, cosine to 2e-5": ["--block_size", "256", "--batch_size", "16", "--min_lr", "2e-5"],
    "256 x 16, wsd to 2e-5, decay 0.5": ["--block_size", "256", "--batch_size", "16", "--lr_schedule", "wsd",
                                         "--min_lr", "2e-5", "--decay_fraction", "0.5"],
    "256 x 16, wsd to 0": ["--block_size", "256", "--batch_size", "16", "--lr_schedule", "wsd", "--min_lr", "0"],
    "256 x 16, wsd to 2e-5, decay 0.2": ["--block_size", "256", "--batch_size", "16", "--lr_schedule", "wsd",
                                         "--min_lr", "2e-5", "--decay_fraction", "0.2"],
    "256 x 16, 2 evaluations": ["--block_size", "256", "--batch_size", "16", "--eval_interval", "1000"],
    "256 x 16, ema 0.99, 2 evaluations": ["--block_size", "256", "--batch_size", "16", "--ema_decay", "0.99",
                                          "--eval_interval", "1000"],
}


def length_args(budget: str, iters: int | None) -> list[str]:
    """How long each run trains: the wall-time budget, or exactly `iters` iterations."""
    if iters is None:
        return ["--time-budget", budget]
    return ["--time-budget", "off", "--max_iters", str(iters), "--lr_decay_iters", str(iters)]


def run(name: str, args: list[str], length: list[str], data_dir: Path) -> dict:
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


def table_row(r: dict) -> str:
    if "error" in r:
        return f"| {r['variant']} | `{' '.join(r['args'])}` | failed: {r['error']} | | |"
    return (f"| {r['variant']} | `{' '.join(r['args'])}` | **{r['val_loss']:.4f}** | {r['iters']} | "
            f"{r['wall_s']:.0f} s |")


def load_results(path: Path, command: str) -> dict:
    """FILE.json so far (its rows), or a new one stamped with this machine, today and the command."""
    if not path.exists():
        return stamp({"rows": []}, command)
    results = json.loads(path.read_text())
    if not isinstance(results, dict) or "rows" not in results:
        raise GPTError(f"{path} is not a bench.recipes result file (an object with machine, date, command, rows)")
    return results


def record(results: dict, results_path: Path, out: Path, result: dict, row: str) -> None:
    """Append a run's result to FILE.json and its table row to FILE.md (both as it ends: a stopped run keeps
    what it measured), and print the row."""
    results["rows"].append(result)
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    with out.open("a") as f:
        f.write(row + "\n")
    print(row, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.recipes", description=__doc__)
    p.add_argument("--budget", default="300s", help="each run's --time-budget (default 300s)")
    p.add_argument("--iters", type=int, metavar="N", help="train each variant exactly N iterations instead of a budget")
    p.add_argument("--out", type=Path, required=True, help="the markdown table to append to (and .json beside)")
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.add_argument("--only", nargs="*", choices=list(VARIANTS), help="run these variants only")
    args = p.parse_args(argv)
    if args.iters is not None and args.iters < 1:
        raise GPTError(f"--iters must be a positive iteration count, got {args.iters}")
    length = length_args(args.budget, args.iters)
    each = f"{args.iters:,} iterations" if args.iters else args.budget
    if not args.out.exists():
        args.out.write_text(f"# Recipes at equal {'iterations' if args.iters else 'wall time'} ({each} each, `cpu` "
                            "preset shape unless named)\n\n"
                            f"CPU: {cpu_model()}, 2 threads. Val loss: the best model's float32 full pass.\n\n"
                            "| variant | gpt.train options | val loss | iterations | wall |\n|---|---|---|---|---|\n")
    results_path = args.out.with_suffix(".json")
    results = load_results(results_path, command_line("python -m bench.recipes", sys.argv[1:] if argv is None
                                                       else list(argv)))
    for name in args.only or VARIANTS:
        result = run(name, VARIANTS[name], length, args.data_dir)
        result["budget" if args.iters is None else "fixed_iters"] = args.iters or args.budget
        record(results, results_path, args.out, result, table_row(result))
    return 0


if __name__ == "__main__":
    run_cli(main)
