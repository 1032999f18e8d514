"""The documentation's promises that a build alone would not catch: the README stays short, every generated block
of README.md and docs/ is what `make generated` writes (GitHub shows the pages as committed), every relative link
and image of them leads to a file of the repository, every result file names its machine, date and command,
and the CLI reference holds every command and option the parsers define. `make docs` (run by `make test`)
builds the site itself with --strict and executes the walkthrough."""

from __future__ import annotations

import argparse
import json
import re

import pytest
from conftest import ROOT

from bench.harness.results_files import ResultsError, read, read_all, stamp
from docsgen import cli, generated, walkthrough

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first = "\n".join(lines[:25])
    assert "make demo" in first and "make test" in first


def test_every_generated_block_is_what_make_generated_writes():
    pages = generated.pages(ROOT)
    assert sum(len(generated.blocks(p.read_text())) for p in pages) >= 40
    stale = [(p.relative_to(ROOT).as_posix(), spec) for p in pages for spec in generated.stale(p.read_text(), p)]
    assert stale == [], "run `make generated`"


def test_a_stale_block_is_found_and_rewritten(tmp_path):
    page = tmp_path / "page.md"
    text = "before\n<!-- generated: table tests/README.md -->\n| old |\n<!-- end generated -->\nafter\n"
    assert generated.stale(text, page) == ["table tests/README.md"]
    new = generated.rewrite(text, page)
    assert generated.stale(new, page) == [] and new.startswith("before\n") and new.endswith("after\n")
    assert "| old |" not in new and new.splitlines()[3].startswith("| ")  # the first table of tests/README.md


def test_every_relative_link_and_image_leads_to_a_file_of_the_repository():
    notebook = json.loads(walkthrough.NOTEBOOK.read_text())
    prose = "".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "markdown")
    texts = [(page, page.read_text()) for page in generated.pages(ROOT)] + [(walkthrough.NOTEBOOK, prose)]
    broken = []
    for page, text in texts:
        for target in LINK.findall(FENCE.sub("", text)):
            path = target.split("#")[0]
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or not path:
                continue
            resolved = (page.parent / path).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_walkthrough_is_committed_with_the_outputs_of_its_cells_as_they_are():
    notebook = json.loads(walkthrough.NOTEBOOK.read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1)), "run `make walkthrough`"
    assert notebook["metadata"].get(walkthrough.DIGEST_KEY) == walkthrough.digest(notebook), "run `make walkthrough`"
    assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert sum(o["output_type"] == "display_data" for c in code for o in c["outputs"]) >= 4  # the figures
    wide = [line for c in code for line in "".join(c["source"]).splitlines() if len(line) > 79]
    assert wide == [], "the code must fit the page's column (79 characters)"


def test_every_result_file_names_its_machine_date_and_command():
    files = read_all()
    assert files, "no result files under bench/results"
    for f in files.values():
        assert f.machine.strip() and f.command.strip() and re.fullmatch(r"\d{4}-\d{2}-\d{2}", f.date), f.name


@pytest.mark.parametrize("missing", ["machine", "command", "date"])
def test_a_result_file_without_its_provenance_is_refused(tmp_path, missing):
    report = stamp({"rows": [{"tokens_per_s": 1.0}]}, command="python -m bench.serving --onnx x.onnx")
    del report[missing]
    (tmp_path / "run.json").write_text(json.dumps(report))
    with pytest.raises(ResultsError, match=f"has no {missing}"):
        read_all(tmp_path)


def test_stamp_records_this_machine_today_and_the_command(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(stamp({"rows": []}, command="make bench")))
    f = read(tmp_path / "run.json", tmp_path)
    assert f.command == "make bench" and "core" in f.machine and f.name == "run"


def test_the_cli_reference_has_every_command_and_option():
    modules = cli.entry_points()
    for expected in ("gpt.train", "gpt.sample", "gpt.serve", "gpt.inspect", "export.onnx", "export.web", "export.hf",
                     "bench.serving", "kernels.aot"):
        assert expected in modules
    for module in ("gpt.sample", "gpt.train", "export.web", "gpt.convert"):
        command = cli.capture(module)
        page = cli.render(command)
        parsers = [command.parser]
        while parsers:
            p = parsers.pop()
            for action in p._actions:
                if isinstance(action, argparse._SubParsersAction):
                    parsers += list(action.choices.values())
                for option in action.option_strings:
                    if option not in ("-h", "--help"):
                        assert f"`{option}`" in page, (module, option)


def test_the_old_static_server_name_names_the_new_command():
    command = cli.capture("export.serve")
    assert command.parser is None and "python -m export.web --serve" in command.said
