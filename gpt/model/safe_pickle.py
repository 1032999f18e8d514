"""Read a pickle of plain data (dicts, lists, strings, ints) without running any code it holds. Torch-free.

A pickle runs code only through the callables it names (`GLOBAL`/`STACK_GLOBAL`, then `REDUCE`, `BUILD`,
`NEWOBJ`, ...), and every name is resolved by `find_class`: refusing all of them leaves only the opcodes that
build plain containers and literals. What loads is then checked to be dicts, lists, strings and ints only.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from gpt.errors import GPTError

PLAIN = (dict, list, str, int)


class Refused(pickle.UnpicklingError):
    """The pickle names code or holds something other than plain data."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise Refused(f"it names {module}.{name}, which would run code")


def _check_plain(value: object) -> None:
    if not isinstance(value, PLAIN):
        raise Refused(f"it holds a {type(value).__name__}, not only dicts, lists, strings and ints")
    children = [*value.keys(), *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else []
    for child in children:
        _check_plain(child)


def load_plain(path: Path) -> object:
    """The object pickled in `path`; a `GPTError` for a missing file, a broken pickle or one that is not plain."""
    path = Path(path)
    if not path.is_file():
        raise GPTError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        value = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
        _check_plain(value)
    except Refused as e:
        raise GPTError(f"{path} was refused: {e}; only a pickle of dicts, lists, strings and ints is read "
                       "(nothing in it was run)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            RecursionError) as e:  # a truncated or foreign file: the unpickler raises many kinds
        reason = " ".join(str(e).split())[:160]
        raise GPTError(f"{path} is not a readable pickle ({type(e).__name__}: {reason})") from None
    return value
