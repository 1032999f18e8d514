"""What the ngram and distilled drafters make from the training text once and keep beside the model: the text as
the model's ids, and their .npz files (arrays plus a JSON header with a format version) written atomically and
read back with one-line errors. Torch-free."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import numpy as np

from gpt.errors import GPTError
from gpt.fsutil import atomic_write_bytes


def encode_text(text: str, vocab: list[str]) -> np.ndarray:
    """The training text as the model's ids; a character outside its vocabulary means another text."""
    stoi = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(text) - set(stoi))
    if unknown:
        raise GPTError(f"the training text has {len(unknown)} character(s) outside the model's vocabulary "
                       f"({', '.join(map(repr, unknown[:5]))}): it is not the text this model was trained on")
    return np.fromiter((stoi[c] for c in text), dtype=np.int64, count=len(text))


def save_npz(path: Path, header: dict, **arrays: np.ndarray) -> None:
    buf = BytesIO()
    np.savez(buf, meta=np.array(json.dumps(header)), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: Path, what: str, version: int, fields: tuple[str, ...],
             arrays: tuple[str, ...] = ()) -> tuple[dict, dict[str, np.ndarray]]:
    """(the header, every array) of a file saved by `save_npz` with `header["version"] == version` and the header
    `fields` and `arrays` named."""
    try:
        with np.load(path, allow_pickle=False) as f:
            header = json.loads(str(f["meta"]))
            if header.get("version") != version:
                raise GPTError(f"{path} is {what} of version {header.get('version')}; this version reads {version}: "
                               "delete it and it is made again")
            missing = [name for name in fields if name not in header] + [name for name in arrays if name not in f.files]
            if missing:
                raise KeyError(missing[0])
            return header, {name: f[name] for name in f.files if name != "meta"}
    except (OSError, ValueError, KeyError) as e:
        raise GPTError(f"{path} is not a readable {what.removeprefix('an ').removeprefix('a ')} "
                       f"({type(e).__name__}): delete it and it is made again") from None
