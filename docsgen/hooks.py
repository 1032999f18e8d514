"""MkDocs hooks (mkdocs.yml `hooks:`): the pages are built as GitHub shows them, with three changes.

- Every generated block (docsgen/generated.py) must be what `make generated` writes now: a stale one stops
  the build, naming the page and the block.
- An `api OBJECT` block becomes mkdocstrings' `::: OBJECT`, so the site renders the docstring properly.
- The files the pages link to outside docs/ (bench/results/*.json and *.png, web/*.png) are published
  under results/ and assets/, and the links are pointed at those copies.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

from bench.harness.results_files import RESULTS
from docsgen import generated
from gpt.errors import GPTError

ROOT = Path(__file__).resolve().parents[1]
# the site's folder -> the repository's folder and the files of it the site publishes
PUBLISHED = {"results": (RESULTS, ("**/*.json", "**/*.png")), "assets": (ROOT / "web", ("*.png",))}
LINK = re.compile(r"\]\(([^)\s#]+)")


def on_files(files: Files, config) -> Files:
    for prefix, (folder, patterns) in PUBLISHED.items():
        for pattern in patterns:
            for path in sorted(folder.glob(pattern)):
                uri = f"{prefix}/{path.relative_to(folder).as_posix()}"
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def site_link(target: str, page_dir: str) -> str:
    """A link of docs/`page_dir`/... to a published file outside docs/, pointed at the site's copy."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):
        return target
    in_repo = posixpath.normpath(posixpath.join("docs", page_dir, target))
    for prefix, (folder, _) in PUBLISHED.items():
        repo_folder = folder.relative_to(ROOT).as_posix() + "/"
        if in_repo.startswith(repo_folder):
            return posixpath.relpath(f"docs/{prefix}/{in_repo[len(repo_folder):]}", posixpath.join("docs", page_dir))
    return target


def on_page_markdown(markdown: str, page, config, files) -> str:
    source = ROOT / "docs" / page.file.src_uri

    def checked(m: re.Match) -> str:
        spec = m["spec"]
        try:
            expected = generated.render(spec, source)
        except (GPTError, ImportError, KeyError, IndexError, ValueError, OSError) as e:
            raise PluginError(f"{page.file.src_uri}: the block '{spec}': {type(e).__name__}: {e}") from None
        if m["body"].strip() != expected:
            raise PluginError(f"{page.file.src_uri}: the generated block '{spec}' is out of date; run "
                              "`make generated`")
        if spec.split()[0] == "api":
            return f"::: {spec.split()[1]}"
        return m.group(0)

    markdown = generated.BLOCK.sub(checked, markdown)
    here = posixpath.dirname(page.file.src_uri)
    return LINK.sub(lambda m: "](" + site_link(m[1], here), markdown)
