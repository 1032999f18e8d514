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


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it names {module}.{name}, which would run code")


def _check_plain(value: object) -> None:
    if not isinstance(value, PLAIN):
        raise pickle.UnpicklingError(f"it holds a {type(value).__name__}, not only dicts, lists, strings and ints")
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
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, RecursionError) as e:
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise GPTError(f"{path} was refused: {reason}; only a pickle of dicts, lists, strings and ints is read "
                       "(nothing in it was run)") from None
    return value
