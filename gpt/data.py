"""Tiny Shakespeare: fetch (or copy), verify, split 90/10, and sample random training windows.

`python -m gpt.data [--source PATH_OR_URL] [--data-dir data]`
"""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gpt.errors import ArgumentParser, GPTError, run_cli
from gpt.fsutil import atomic_write_bytes, ensure_dir

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DEFAULT_DATA_DIR = Path("data")
RELATIVE_PATH = Path("tinyshakespeare/input.txt")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare(source: str | None = None, data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    """Put a verified copy of Tiny Shakespeare at `data_dir/tinyshakespeare/input.txt` (written atomically)."""
    dest = Path(data_dir) / RELATIVE_PATH
    if dest.is_file() and sha256_of(dest) == SHA256:
        return dest
    ensure_dir(dest.parent, "data directory", "--data-dir")
    source = source or URL
    data = fetch(source)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise GPTError(f"checksum mismatch for {source}: sha256 {digest}, expected {SHA256}; it is not "
                       "Tiny Shakespeare (to train on your own text use `python -m gpt.train --data FILE`)")
    atomic_write_bytes(dest, data)
    return dest


def fetch(source: str) -> bytes:
    """The bytes of a URL or a local file (1.1 MB for Tiny Shakespeare: memory is fine)."""
    if "://" in source:
        try:
            with urllib.request.urlopen(source, timeout=60) as r:
                return r.read()
        except OSError as e:
            raise GPTError(f"could not download {source}: {e}") from None
    if not Path(source).is_file():
        raise GPTError(f"source file {source} does not exist")
    return Path(source).read_bytes()


def load_shakespeare(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    """The verified Tiny Shakespeare text; a clear error tells the user how to get it."""
    path = Path(data_dir) / RELATIVE_PATH
    if not path.is_file():
        raise GPTError(f"{path} not found; run `python -m gpt.data` (or `make data`) first")
    if sha256_of(path) != SHA256:
        raise GPTError(f"{path} has the wrong checksum; delete it and run `python -m gpt.data` again")
    return path.read_text(encoding="utf-8")


def load_text(path: Path) -> str:
    """A user's own UTF-8 training text (no checksum)."""
    path = Path(path)
    if not path.is_file():
        raise GPTError(f"data file {path} " + ("is not a regular file" if path.exists() else "does not exist"))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise GPTError(f"data file {path} is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    return text


def split(ids: np.ndarray, train_fraction: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """First 90 % train, last 10 % val (nanoGPT's split, so losses compare)."""
    n = int(len(ids) * train_fraction)
    return ids[:n], ids[n:]


def eval_windows(data: np.ndarray, block_size: int, batch_size: int):
    """The whole split as (x, y) int64 batches of non-overlapping block_size windows, the tail as a last,
    shorter window: every next-token prediction of the split exactly once (for full-pass val losses)."""
    n = (len(data) - 1) // block_size
    starts = np.arange(n) * block_size
    for b in range(0, n, batch_size):
        s = starts[b:b + batch_size, None] + np.arange(block_size)
        yield data[s].astype(np.int64), data[s + 1].astype(np.int64)
    if len(data) - 1 > n * block_size:
        yield data[None, n * block_size:-1].astype(np.int64), data[None, n * block_size + 1:].astype(np.int64)


class BatchSampler:
    """Random windows of `block_size + 1` tokens; the numpy RNG state is the sampler's position."""

    def __init__(self, data: np.ndarray, block_size: int, batch_size: int, seed: int):
        if len(data) <= block_size:
            raise GPTError(
                f"split has {len(data)} tokens, fewer than block_size + 1 = {block_size + 1}; "
                "use more text or a smaller --block_size"
            )
        self.data, self.block_size, self.batch_size = data, block_size, batch_size
        self.rng = np.random.default_rng(seed)

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        starts = self.rng.integers(0, len(self.data) - self.block_size, size=self.batch_size)
        offsets = np.arange(self.block_size)
        x = self.data[starts[:, None] + offsets]
        y = self.data[starts[:, None] + offsets + 1]
        return x.astype(np.int64), y.astype(np.int64)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m gpt.data", description=__doc__)
    p.add_argument("--source", help=f"local file or URL to copy from (default: {URL})")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where to put it (default: data)")
    args = p.parse_args(argv)
    dest = prepare(args.source, args.data_dir)
    print(f"{dest}: {dest.stat().st_size:,} bytes, sha256 verified")
    return 0


if __name__ == "__main__":
    run_cli(main)
