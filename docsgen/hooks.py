"""MkDocs hooks (mkdocs.yml `hooks:`): what the pages show is made from the code and the result files at build
time, never typed in.

    {{ results: KIND ARG }}   (alone on a line) a results table from bench/results/ARG.json (bench/reports/tables.py)
    {{ cli: MODULE }}         the options of `python -m MODULE`, from its argparse parser (`all`: every one)
    {{ presets: }}            the model presets, from gpt.config.PRESETS
    {{ table: PATH }}         the first Markdown table of a file of the repository (tests/README.md's guarantees)

The result files (and their .png charts) are published under results/, so each table links to
the JSON it came from. A result file without its machine, date or command stops the build.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

from bench.harness.results_files import RESULTS, ResultFile, ResultsError, read_all
from bench.reports import tables
from docsgen import cli, presets

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"^\{\{\s*(results|cli|presets|table):\s*([^}]*?)\s*\}\}$", re.M)  # alone on a line
PUBLISHED = {"results": (RESULTS, ("*.json", "*.png")), "assets": (ROOT / "web", ("screenshot.png", "explorer.png"))}

_files: dict[str, ResultFile] = {}


def first_table(text: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def on_pre_build(config) -> None:
    global _files
    try:
        _files = read_all()
    except ResultsError as e:
        raise PluginError(str(e)) from None


def on_files(files: Files, config) -> Files:
    for prefix, (folder, patterns) in PUBLISHED.items():
        for pattern in patterns:
            for path in sorted(folder.rglob(pattern)):
                uri = f"{prefix}/{path.relative_to(folder).as_posix()}"
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    here = posixpath.dirname(page.file.src_uri)

    def link(name: str) -> str:
        return posixpath.relpath(f"results/{name}.json", here or ".")

    def replace(m: re.Match) -> str:
        kind, args = m.group(1), m.group(2).split()
        try:
            if kind == "cli":
                return cli.reference(None if args == ["all"] else args)
            if kind == "presets":
                return presets.table()
            if kind == "table":
                return first_table((ROOT / args[0]).read_text())
            return tables.render(args[0], args[1:], _files, link)
        except (ResultsError, ImportError, KeyError, IndexError, ValueError, OSError) as e:
            raise PluginError(f"{page.file.src_uri}: {m.group(0)}: {type(e).__name__}: {e}") from None

    return PLACEHOLDER.sub(replace, markdown)
