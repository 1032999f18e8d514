"""The documentation's promises that a build alone would not catch: the README stays short and its results table
is the generator's (GitHub shows it as committed), every result file names its machine, date and command, and
the CLI reference holds every command and option the parsers define. `make docs` (run by `make test`) builds
the site itself with --strict and executes the walkthrough."""

from __future__ import annotations

import argparse
import json
import re

import pytest
from conftest import ROOT

from bench.harness.results_files import ResultsError, read, read_all, stamp
from docsgen import cli, readme


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    first = "\n".join(lines[:25])
    assert "make demo" in first and "make test" in first


def test_the_readme_table_is_what_make_readme_writes():
    text = (ROOT / "README.md").read_text()
    assert readme.rewrite(text, readme.table()) == text, "run `make readme`"


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
