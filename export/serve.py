"""Renamed: the web page's static server is `python -m export.web --serve` (`python -m gpt.serve` is the
OpenAI-compatible API). This module only says so, for one release."""

from __future__ import annotations

import sys
from collections.abc import Sequence

NEW_COMMAND = "python -m export.web --serve"


def main(argv: Sequence[str] | None = None) -> int:
    print(f"error: `python -m export.serve` is now `{NEW_COMMAND}` (it builds the site and serves it on 127.0.0.1; "
          "add --no-build to serve --out as it is)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
