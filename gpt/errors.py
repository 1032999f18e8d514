"""User-facing errors and the CLI wrapper that turns them into one line on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn


class GPTError(Exception):
    """An error caused by the user's input: printed as `error: <message>` with no traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (`error: <problem> (see `<prog> --help`)`) instead of usage + error, and
    descriptions printed with their own line breaks (every CLI's description is its module docstring)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


@contextmanager
def flag_names(*names: str) -> Iterator[None]:
    """A CLI calls the library through this: an error the library phrases with a Python parameter
    (`draft_tokens must be ...`) reaches the user with the flag they typed (`--draft-tokens must be ...`)."""
    try:
        yield
    except GPTError as e:
        message = str(e)
        for name in names:
            if message.startswith(name + " "):
                raise GPTError("--" + name.replace("_", "-") + message[len(name):]) from None
        raise


def at_least(low: int) -> Callable[[str], int]:
    """An argparse `type`: an integer >= `low`, else the flag's one-line error ("argument --threads: must be >= 1,
    got 0")."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def add_threads(parser: argparse.ArgumentParser, help: str = "intra-op threads (default: all cores)") -> None:
    """The `--threads N` flag every CLI that runs a model shares (N >= 1; default: the runtime's own choice)."""
    parser.add_argument("--threads", type=at_least(1), default=None, metavar="N", help=help)


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
