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

from collections.abc import Sequence

from bench.harness.cli import add_options, command
from bench.harness.machine import cpu_model
from bench.harness.train_runs import Appended, length_args, run
from bench.reports.training import RECIPES_HEADER, recipes_row
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


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.recipes", description=__doc__)
    p.add_argument("--budget", default="300s", help="each run's --time-budget (default 300s)")
    p.add_argument("--iters", type=int, metavar="N", help="train each variant exactly N iterations instead of a budget")
    add_options(p, out="the markdown table to append to (and .json beside)", out_required=True, data_dir=True)
    p.add_argument("--only", nargs="*", choices=list(VARIANTS), help="run these variants only")
    args = p.parse_args(argv)
    if args.iters is not None and args.iters < 1:
        raise GPTError(f"--iters must be a positive iteration count, got {args.iters}")
    length = length_args(args.budget, args.iters)
    each = f"{args.iters:,} iterations" if args.iters else args.budget
    heading = (f"# Recipes at equal {'iterations' if args.iters else 'wall time'} ({each} each, `cpu` preset shape "
               f"unless named)\n\nCPU: {cpu_model()}, 2 threads. Val loss: the best model's float32 full pass.\n\n"
               + RECIPES_HEADER)
    table = Appended(args.out, heading, command(p, argv))
    for name in args.only or VARIANTS:
        result = run(name, VARIANTS[name], length, args.data_dir)
        result["budget" if args.iters is None else "fixed_iters"] = args.iters or args.budget
        table.add(result, recipes_row(result))
    return 0


if __name__ == "__main__":
    run_cli(main)
