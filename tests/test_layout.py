"""The tree's rules, checked from the code: which package may import which, and which never reach torch.

Every import counts, also one inside a function (a lazy import still ties two packages together). The rooms:
the foundation (gpt's top-level modules: errors, tokenizer, config, data, fsutil), `gpt.model` (torch),
`gpt.train`, `gpt.decode` (torch-free), `gpt.engine`, `gpt.serve`, `gpt.inspect`, the CLIs at gpt's top
(`gpt.sample`, `gpt.convert`), the Python API (`gpt.api`), `export` and `kernels`; `bench`, `docsgen` and
`tests` may import anything, and nothing imports them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = {"gpt.errors", "gpt.tokenizer", "gpt.config", "gpt.data", "gpt.fsutil"}
# room -> the rooms it may import (besides itself); the direction of the data flow, text -> tokens per second
MAY_IMPORT = {
    "foundation": set(),
    "kernels": set(),
    "gpt.model": {"foundation", "kernels"},
    "gpt.train": {"foundation", "gpt.model"},
    "gpt.inspect": {"foundation", "gpt.model"},
    "gpt.decode": {"foundation"},
    "gpt.engine": {"foundation", "gpt.decode"},
    "gpt.serve": {"foundation", "gpt.decode", "gpt.engine"},
    "gpt": {"foundation", "gpt.decode", "gpt.api"},  # gpt/__init__.py: gpt.load
    "gpt.api": {"foundation", "gpt.decode", "gpt.engine"},  # TextGenerator: one prompt, or many through the engine
    "gpt.sample": {"foundation", "gpt.decode"},
    "gpt.convert": {"foundation", "gpt.model"},
    "export": {"foundation", "gpt.model", "gpt.decode", "kernels"},
}
# the one module of a torch-free room that may import torch: the torch backend, imported only when chosen
TORCH_BACKEND = "gpt.decode.backends.torch_decoder"
EXCEPTIONS = {(TORCH_BACKEND, "gpt.model")}
TORCH_FREE = ("foundation", "gpt.decode", "gpt.engine", "gpt.serve", "gpt", "gpt.api", "gpt.sample")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room(module: str) -> str | None:
    if module in FOUNDATION:
        return "foundation"
    for name in sorted(MAY_IMPORT, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    top = module.split(".")[0]
    return top if top in {"bench", "docsgen", "tests"} else None


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (from-imports name their module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


SOURCES = {module_name(p): p for d in ("gpt", "export", "kernels") for p in sorted((ROOT / d).rglob("*.py"))}


def test_every_source_module_has_a_room():
    assert [m for m in SOURCES if room(m) is None] == []


def test_imports_follow_the_direction_of_the_data_flow():
    wrong = []
    for module, path in SOURCES.items():
        own = room(module)
        for target in imports(path):
            other = room(target)
            if other is None or other == own or other in MAY_IMPORT[own] or (module, other) in EXCEPTIONS:
                continue
            wrong.append(f"{module} ({own}) imports {target} ({other})")
    assert wrong == []


@pytest.mark.parametrize("rule", TORCH_FREE)
def test_torch_free_rooms_do_not_import_torch_in_their_source(rule):
    offenders = [m for m, p in SOURCES.items() if room(m) == rule and m != TORCH_BACKEND
                 and any(t == "torch" or t.startswith("torch.") for t in imports(p))]
    assert offenders == []


def test_importing_every_torch_free_module_pulls_no_torch():
    """Import them all in a fresh interpreter (the server's and Ray's extras are installed here); torch is
    importable, so only our own imports can pull it in."""
    names = sorted(m for m in SOURCES if room(m) in TORCH_FREE and m != TORCH_BACKEND
                   and not m.endswith("__main__"))
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "pulled = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            "assert not pulled, pulled[:5]\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(names) > 30
