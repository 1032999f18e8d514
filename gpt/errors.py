"""User-facing errors and the CLI wrapper that turns them into one line on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn


class GPTError(Exception):
    """An error caused by the user's input: printed as `error: <message>` with no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (`error: <problem> (see `<prog> --help`)`) instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def out_of_memory(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"  # torch.OutOfMemoryError


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a CLI `main`, mapping `GPTError` (and friends) to a one-line message and exit code 2.

    OS errors (disk full, permission denied, ...) and running out of memory are one line too (exit 1).
    Anything else is a bug and keeps its traceback. `--debug` anywhere on the command line re-raises
    so the full traceback is shown.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        code = main([a for a in args if a != "--debug"])
    except GPTError as e:
        if debug:
            raise
        fail(str(e), 2)
    except KeyboardInterrupt:
        if debug:
            raise
        fail("interrupted", 130)
    except OSError as e:
        if debug:
            raise
        fail(" ".join(str(e).split()), 1)
    except Exception as e:
        if debug or not out_of_memory(e):
            raise
        reason = " ".join(str(e).split())[:200]
        fail(f"out of memory ({type(e).__name__}: {reason}); try a smaller --batch_size, --num-samples "
             "or model", 1)
    sys.exit(code or 0)


def fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)
