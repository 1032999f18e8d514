"""The options the `python -m bench.X` commands share, defined once: `--onnx`, `--threads`, `--out`, `--data` (the
text the prompts are drawn from) and `--data-dir`, and the command line a result file records."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bench.harness.results_files import command_line
from gpt.data import DEFAULT_DATA_DIR, RELATIVE_PATH
from gpt.errors import add_threads

TEXT = DEFAULT_DATA_DIR / RELATIVE_PATH  # Tiny Shakespeare, where `python -m gpt.data` puts it


def add_options(p: argparse.ArgumentParser, *, onnx: str | None = None, threads: str | None = None,
                threads_default: int | None = None, out: str | None = None, out_required: bool = False,
                text: bool = False, data_dir: bool = False) -> None:
    """Add each option whose help is given: `--onnx FILE` (required), `--threads N` (gpt.errors.add_threads;
    `threads_default` where the command has one), `--out NAME` (what it writes); `text`: `--data FILE`, the
    text the prompts come from; `data_dir`: `--data-dir`, where gpt.data keeps Tiny Shakespeare."""
    if onnx is not None:
        p.add_argument("--onnx", type=Path, required=True, help=onnx)
    if threads is not None:
        add_threads(p, threads)
        p.set_defaults(threads=threads_default)
    if text:
        p.add_argument("--data", type=Path, default=TEXT, help=f"the text the prompts come from (default: {TEXT}; "
                       "the last 10 %%, the validation split)")
    if data_dir:
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                       help=f"where `python -m gpt.data` put Tiny Shakespeare (default: {DEFAULT_DATA_DIR})")
    if out is not None:
        p.add_argument("--out", type=Path, required=out_required, default=None, help=out)


def command(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> str:
    """The command line a result file records: `python -m bench.X` and the options `main` was given."""
    return command_line(p.prog, None if argv is None else list(argv))
