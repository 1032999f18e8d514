"""User-facing errors and the CLI wrapper that turns them into one line on stderr."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class GPTError(Exception):
    """An error caused by the user's input: printed as `error: <message>` with no traceback."""


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a CLI `main`, mapping `GPTError` (and friends) to a one-line message and exit code 2.

    `--debug` anywhere on the command line re-raises so the full traceback is shown.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        code = main([a for a in args if a != "--debug"])
    except GPTError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
