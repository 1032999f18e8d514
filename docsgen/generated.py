"""The generated blocks of README.md and docs/*.md: `python -m docsgen.generated` (`make generated`) rewrites the
lines between each pair of markers; `--check` only says which are stale (tests/test_docs.py, and the docs
build fails on one, docsgen/hooks.py).

    <!-- generated: KIND ARGS -->
    ...written here, never by hand...
    <!-- end generated -->

    results KIND FILE [ARG]  a results table from bench/results/FILE.json (bench/reports/tables.py)
    cli MODULE | all         the options of `python -m MODULE`, from its argparse parser
    presets                  the model presets, from gpt.config.PRESETS
    table PATH               the first Markdown table of a file of the repository (tests/README.md's guarantees)
    api OBJECT               a function's or class's signature and docstring (the site shows mkdocstrings' page)

GitHub shows a page as it is committed, so what a page shows is written into it, and its links are relative
to the page (bench/results/*.json from docs/ is ../bench/results/); the site publishes those files and the
hook points the links at its copies.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from pathlib import Path

from gpt.errors import ArgumentParser, GPTError, run_cli

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^<!-- generated: (?P<spec>[^>]*?) -->\n(?P<body>.*?)^<!-- end generated -->$", re.M | re.S)


def pages(root: Path = ROOT) -> list[Path]:
    """Every Markdown file that may hold generated blocks."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


@dataclass
class Block:
    spec: str  # "results step_cost 2026-12-07-intel-xeon-step-cost"
    body: str  # what is written between the markers now


def blocks(text: str) -> list[Block]:
    return [Block(m["spec"], m["body"]) for m in BLOCK.finditer(text)]


@cache
def _results() -> dict:
    from bench.harness.results_files import ResultsError, read_all

    try:
        return read_all()
    except ResultsError as e:
        raise GPTError(str(e)) from None


def _first_table(text: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def _object(name: str) -> object:
    """`gpt.decode.loop.Decoder` -> the class: the longest importable module prefix, then attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise GPTError(f"no module in {name!r}")


def _signature(fn: Callable, kind: str, name: str) -> str:
    """`def name(...)`, its annotations evaluated where they can be, one parameter a line when it is long."""
    try:
        sig = inspect.signature(fn, eval_str=True)
    except NameError:  # an annotation named only under TYPE_CHECKING
        sig = inspect.signature(fn)
    params = []
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not any(x.startswith("*") for x in params):
            params.append("*")
        params.append(str(p))
    positional_only = sum(p.kind is p.POSITIONAL_ONLY for p in sig.parameters.values())
    if positional_only:
        params.insert(positional_only, "/")
    returns = sig.return_annotation
    ret = "" if returns is inspect.Signature.empty else f" -> {inspect.formatannotation(returns)}"
    line = f"{kind} {name}({', '.join(params)}){ret}"
    return line if len(line) <= 100 else f"{kind} {name}(\n" + "".join(f"    {p},\n" for p in params) + f"){ret}"


def api(name: str) -> str:
    """A heading, the signature and the docstring; a class adds its public methods' signatures and first lines."""
    obj = _object(name)
    short = name.rsplit(".", 1)[-1]
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj):
        lines = [f"### `{name}`", "", "```python", _signature(obj, "class", short), "```", "", doc]
        for method, fn in vars(obj).items():
            if not method.startswith("_") and callable(fn) and inspect.getdoc(fn):
                first = inspect.getdoc(fn).split("\n\n")[0]
                lines += ["", "```python", _signature(fn, "def", method), "```", "", first]
        return "\n".join(lines)
    return "\n".join([f"### `{name}`", "", "```python", _signature(obj, "def", short), "```", "", doc])


def render(spec: str, page: Path) -> str:
    """The Markdown of one block, its links relative to `page`."""
    kind, *args = spec.split()

    def link(result: str) -> str:
        return Path(os.path.relpath(ROOT / "bench" / "results" / f"{result}.json", page.parent)).as_posix()

    renderers: dict[str, Callable[[], str]] = {
        "cli": lambda: _cli(args),
        "presets": lambda: _presets(),
        "table": lambda: _first_table((ROOT / args[0]).read_text()),
        "api": lambda: api(args[0]),
        "results": lambda: _tables().render(args[0], args[1:], _results(), link),
    }
    if kind not in renderers:
        raise GPTError(f"{page.name}: unknown generated block {spec!r}; the kinds: {', '.join(renderers)}")
    return renderers[kind]().strip()


def _cli(args: list[str]) -> str:
    from docsgen import cli

    return cli.reference(None if args == ["all"] else args)


def _presets() -> str:
    from docsgen import presets

    return presets.table()


def _tables():
    from bench.reports import tables

    return tables


def rewrite(text: str, page: Path) -> str:
    """`text` with every block's lines replaced by what it generates now."""
    return BLOCK.sub(lambda m: f"<!-- generated: {m['spec']} -->\n\n{render(m['spec'], page)}\n\n"
                               "<!-- end generated -->", text)


def stale(text: str, page: Path) -> list[str]:
    """The specs of the blocks of `text` that differ from what they would generate."""
    return [b.spec for b in blocks(text) if b.body.strip() != render(b.spec, page)]


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m docsgen.generated", description=__doc__)
    p.add_argument("--check", action="store_true", help="exit 1 if a block is not what it would write")
    p.add_argument("files", nargs="*", type=Path, help="the pages (default: README.md and docs/**/*.md)")
    args = p.parse_args(argv)
    bad = 0
    for path in args.files or pages():
        text = path.read_text()
        if args.check:
            for spec in stale(text, path.resolve()):
                print(f"{path}: the block '{spec}' is out of date; run `make generated`", file=sys.stderr)
                bad += 1
            continue
        new = rewrite(text, path.resolve())
        if new != text:
            path.write_text(new)
            print(f"rewrote the generated blocks of {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    run_cli(main)
