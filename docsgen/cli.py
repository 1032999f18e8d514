"""The command-line reference, generated from the parsers themselves: every `python -m ...` entry point of
gpt/, export/, bench/ and kernels/ is found by its `__main__` guard (or `__main__.py`), its `main` is called
with argparse's `parse_known_args` replaced by a catch, and the parser it built is written out as Markdown.
A new entry point or option appears in the docs without anyone editing a page.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gpt", "export", "bench", "kernels", "docsgen")
MAIN_GUARD = re.compile(r'^if __name__ == "__main__":', re.M)


def entry_points(root: Path = ROOT) -> list[str]:
    """Module names runnable with `python -m`, in the order of PACKAGES, then by name."""
    found = []
    for package in PACKAGES:
        names = []
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if path.name == "__main__.py":
                names.append(".".join(parts[:-1]))
            elif MAIN_GUARD.search(path.read_text()):
                names.append(".".join(parts))
        found += sorted(names)
    return found


class _Captured(BaseException):  # BaseException: passes through the CLIs' `except Exception`
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


@dataclass
class Command:
    module: str
    parser: argparse.ArgumentParser | None
    said: str  # what main printed when it built no parser (a command that moved)


def capture(module: str) -> Command:
    """The parser `module.main` builds, caught before it parses anything."""
    mod = importlib.import_module(module)
    if not hasattr(mod, "main") and hasattr(mod, "__path__"):  # a package: python -m runs its __main__
        mod = importlib.import_module(f"{module}.__main__")

    def caught(self, args=None, namespace=None):
        raise _Captured(self)

    original = argparse.ArgumentParser.parse_known_args
    argparse.ArgumentParser.parse_known_args = caught
    out = io.StringIO()
    argv = sys.argv
    try:
        sys.argv = [module, "--help"]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            mod.main(["--help"])
    except _Captured as c:
        return Command(module, c.parser, "")
    except SystemExit:
        pass
    finally:
        argparse.ArgumentParser.parse_known_args = original
        sys.argv = argv
    return Command(module, None, out.getvalue().strip())


def anchor(module: str) -> str:
    return module.replace(".", "-")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(action: argparse.Action) -> str:
    d = action.default
    if d is None or d is argparse.SUPPRESS or isinstance(action, (argparse._StoreTrueAction,
                                                                  argparse._StoreFalseAction)):
        return ""
    return f"`{d!r}`" if isinstance(d, str) and not d.strip() else f"`{d}`"


def _options(parser: argparse.ArgumentParser) -> Iterator[str]:
    formatter = parser._get_formatter()
    for group in parser._action_groups:
        skip = (argparse._HelpAction, argparse._SubParsersAction)
        actions = [a for a in group._group_actions if not isinstance(a, skip) and a.help != argparse.SUPPRESS]
        if not actions:
            continue
        yield "" if group.title in ("options", "optional arguments") else f"*{group.title}*\n"
        yield "| option | default | what it does |\n|---|---|---|"
        for a in actions:
            names = ", ".join(f"`{s}`" for s in a.option_strings) or f"`{a.metavar or a.dest}`"
            if a.option_strings and a.nargs != 0:
                metavar = formatter._format_args(a, formatter._get_default_metavar_for_optional(a))
                names += f" `{metavar}`"
            text = formatter._expand_help(a) if a.help else ""
            if a.choices and a.metavar is not None:  # argparse shows them as {a,b} only without a metavar
                text += f" (one of: {', '.join(f'`{c}`' for c in a.choices)})"
            yield f"| {_cell(names)} | {_cell(_default(a))} | {_cell(text)} |"


WIDTH = 110  # the usage lines' width, fixed: argparse would follow the terminal, and the committed page must not


def render_parser(parser: argparse.ArgumentParser, title: str, level: int, ident: str) -> str:
    parser.formatter_class = functools.partial(parser.formatter_class, width=WIDTH)
    lines = [f'<a id="{ident}"></a>', "", f"{'#' * level} `{title}`", ""]  # an anchor GitHub and MkDocs keep
    if parser.description:
        lines += ["```text", parser.description.strip("\n"), "```", ""]
    lines += ["```text", parser.format_usage().strip(), "```", "", *_options(parser), ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                lines.append(render_parser(sub, f"{title} {name}", level + 1, f"{ident}-{name}"))
    return "\n".join(lines)


def render(command: Command, level: int = 2) -> str:
    title = f"python -m {command.module}"
    if command.parser is None:
        return f'<a id="{anchor(command.module)}"></a>\n\n{"#" * level} `{title}`\n\n```text\n{command.said}\n```\n'
    return render_parser(command.parser, title, level, anchor(command.module))


def reference(modules: list[str] | None = None) -> str:
    """Markdown for `modules` (default: every entry point)."""
    return "\n".join(render(capture(m)) for m in (modules or entry_points()))
