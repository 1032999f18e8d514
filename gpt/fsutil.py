"""Atomic file writes (a temporary file in the same directory, flushed, fsynced, `os.replace`d, then the
directory fsynced) and the fault-injection hook the crash tests use.

`GPT_FAULT_INJECT` is a comma-separated list of `point` or `point@k` (the k-th time the point is reached,
default 1st). When a listed point is reached the process kills itself with SIGKILL, exactly as `kill -9`
would: no cleanup, no flushing. Points: `before-weights` (weights written to a temp file, not yet renamed),
`after-weights` (new weights staged, manifest not yet written), `after-manifest` (manifest committed,
staged weights not yet renamed to model.safetensors), `before-state` (train_state temp file written, not
yet renamed), `after-state`. `nan-loss@N` (read by gpt.train) makes the loss of iteration N a NaN.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

FAULT_ENV = "GPT_FAULT_INJECT"
_hits: dict[str, int] = {}


def fault_spec(point: str) -> int | None:
    """The `k` of `point@k` in GPT_FAULT_INJECT (1 for a bare `point`), or None when the point is not listed."""
    for item in os.environ.get(FAULT_ENV, "").split(","):
        name, _, k = item.strip().partition("@")
        if name == point:
            return int(k) if k else 1
    return None


def fault_point(point: str) -> None:
    """Die here, as under `kill -9`, if GPT_FAULT_INJECT asks for this point (and this is the k-th hit)."""
    k = fault_spec(point)
    if k is None:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == k:
        print(f"fault injected: killed at {point}@{k}", file=sys.stderr, flush=True)
        if hasattr(signal, "SIGKILL"):
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(137)


def atomic_write_bytes(path: Path, data: bytes, fault: str | None = None) -> None:
    """Replace `path` with `data` so that a crash at any moment leaves either the old or the new file.

    `fault` names a fault point reached after the temp file is durable and before it is renamed.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, file_mode(path))  # mkstemp makes 0600; keep the file's mode, or the umask's default
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if fault:
            fault_point(fault)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    fsync_dir(path.parent)


def file_mode(path: Path) -> int:
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: Path, text: str, fault: str | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fault)


def replace(src: Path, dst: Path) -> None:
    """`os.replace` made durable (the directory entry fsynced)."""
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


def remove_stale_temps(directory: Path, names: tuple[str, ...]) -> None:
    """Delete the temp files a killed writer of `names` left behind (`.NAME.*.tmp`)."""
    for name in names:
        for p in Path(directory).glob(f".{name}.*.tmp"):
            try:
                p.unlink()
            except OSError:
                pass


def fsync_dir(path: Path) -> None:
    """Make a rename durable: fsync the directory entry (a no-op where the OS does not allow it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_dir(path: Path, what: str = "output directory", flag: str = "--out-dir") -> Path:
    """Refuse a path that exists and is not a directory (nothing is created)."""
    from gpt.errors import GPTError

    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                where = " exists and is a file" if p == path else f": {p} exists and is not a directory"
                raise GPTError(f"{what} {path}{where}; choose another {flag}")
            break
    return path


def check_new_dir(path: Path, what: str = "output directory", flag: str = "--out") -> Path:
    """Refuse a path that is a file or a directory that is not empty, so nothing of a user's is overwritten."""
    from gpt.errors import GPTError

    path = check_dir(path, what, flag)
    if path.is_dir() and any(path.iterdir()):
        raise GPTError(f"{what} {path} exists and is not empty; choose another {flag} or empty it")
    return path


def ensure_dir(path: Path, what: str = "output directory", flag: str = "--out-dir") -> Path:
    from gpt.errors import GPTError

    path = check_dir(path, what, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GPTError(f"cannot create {what} {path}: {e.strerror}") from None
    return path
