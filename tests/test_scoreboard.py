"""`python -m bench.scoreboard`: the file it writes names its machine and every row's command (or the docs build
stops, naming the file and the field), a row that cannot run is skipped with its reason while the file stays
complete, and the README's headline and the benchmarks page's history are made from such files.

The fixture tests/fixtures/scoreboard/ is a `--quick` run on a tiny model (its figures mean nothing); the real
scoreboards are in bench/results/."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import ROOT, run_module

from bench import scoreboard
from bench.harness.results_files import ResultsError, read, read_all
from bench.harness.scoreboard_rows import ROWS, Figure, Row, Skipped
from bench.reports import tables
from bench.reports.scoreboard import NONE_YET

FIXTURE = ROOT / "tests" / "fixtures" / "scoreboard" / "2026-12-07-tiny-scoreboard.json"


def link(name: str) -> str:
    return f"results/{name}.json"


def write(root: Path, name: str, data: dict) -> Path:
    path = root / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def board() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize(("field", "said"), [
    (("machine",), "has no machine"),
    (("cpu",), "has no machine details"),
    (("cpu", "flags"), "has no cpu.flags"),
    (("rows", 1, "command"), "row 2 (torch) has no command"),
    (("rows", 3, "value"), "row 4 (ort_int8) has no value"),
])
def test_a_scoreboard_without_its_machine_or_a_command_is_one_line_naming_the_file_and_field(tmp_path, board, field,
                                                                                             said):
    data = copy.deepcopy(board)
    parent = data
    for key in field[:-1]:
        parent = parent[key]
    parent.pop(field[-1], None)
    path = write(tmp_path, "2026-12-07-bad-scoreboard", data)
    with pytest.raises(ResultsError) as e:
        read_all(tmp_path)  # what `make generated` and the docs build read
    message = str(e.value)
    assert "\n" not in message and str(path) in message and said in message


def test_a_skipped_row_needs_its_reason(tmp_path, board):
    board["rows"][0] = {k: v for k, v in board["rows"][0].items() if k != "why"} | {"status": "skipped"}
    write(tmp_path, "2026-12-07-bad-scoreboard", board)
    with pytest.raises(ResultsError, match=r"row 1 \(demo\) has no why"):
        read_all(tmp_path)


def test_the_headline_is_the_newest_scoreboard_and_the_history_one_row_per_machine(tmp_path, board):
    older, other = copy.deepcopy(board), copy.deepcopy(board)
    older["date"], older["commit"] = "2026-11-01", "0ld0ld0ld0"
    other["date"], other["cpu"]["model"], other["machine"] = "2026-10-01", "Other CPU", "2-core Other CPU"
    for name, data in (("2026-12-07-a-scoreboard", board), ("2026-11-01-a-scoreboard", older),
                       ("2026-10-01-b-scoreboard", other)):
        write(tmp_path, name, data)
    files = read_all(tmp_path)
    headline = tables.render("headline", [], files, link)
    assert board["machine"] in headline and board["commit"] in headline and "0ld0ld0ld0" not in headline
    assert "results/2026-12-07-a-scoreboard.json" in headline
    body = [line for line in headline.splitlines() if line.startswith("| ")][2:]  # after the header
    assert len(body) == len(board["rows"])
    for row in board["rows"]:
        assert any(row["what"] in line and row["command"].replace("|", "\\|") in line for line in body), row["id"]
    history = tables.render("scoreboard_history", [], files, link)
    lines = [line for line in history.splitlines() if line.startswith("| ")]
    assert len(lines) == 2 + 2  # header, separator, one row per machine kind (the newest of each)
    assert "2026-12-07" in lines[2] and "Other CPU" in lines[3] and "0ld0ld0ld0" not in history
    assert all(r["short"] in lines[2] for r in board["rows"])


def test_without_a_scoreboard_the_headline_says_how_to_make_one(tmp_path):
    assert tables.render("headline", [], {}, link) == NONE_YET
    assert "make scoreboard" in NONE_YET


def test_a_row_that_cannot_run_is_skipped_with_its_reason_and_the_file_is_complete(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.onnx").write_bytes(b"")  # the rows below never open it

    def broken(ctx):
        raise RuntimeError("the\nmachine caught fire")

    def missing(ctx):
        raise Skipped("no widget here")

    rows = [Row("works", "works", "a row that runs", lambda ctx: Figure("1 tok/s", "1", {"x": 1.0}, "tok/s", "how")),
            Row("broken", "broken", "a row that breaks", broken),
            Row("missing", "missing", "a row that cannot run here", missing)]
    monkeypatch.setattr(scoreboard, "ROWS", rows)
    out = tmp_path / "2026-12-07-x-scoreboard"
    scoreboard.main(["--ckpt", str(ckpt), "--out", str(out), "--quick"])
    f = read(out.with_suffix(".json"), tmp_path)  # valid: every row has its command
    by = {r["id"]: r for r in f.rows}
    assert by["works"]["status"] == "measured" and by["works"]["command"].endswith("--only works --ckpt " + str(ckpt)
                                                                                     + " --quick")
    assert by["broken"] == by["broken"] | {"status": "skipped", "why": "RuntimeError: the machine caught fire"}
    assert by["missing"]["status"] == "skipped" and by["missing"]["why"] == "no widget here"
    assert f.data["cpu"]["cores"] >= 1 and f.data["versions"]["python"] and f.data["commit"]


def test_only_names_the_rows_it_knows():
    r = run_module("bench.scoreboard", "--only", "torch,warp_drive")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown row warp_drive" in r.stderr
    assert ", ".join(row.id for row in ROWS) in r.stderr


def test_a_quick_run_on_a_tiny_model_writes_a_valid_scoreboard(tiny_ckpt, exported, periodic_text_file, tmp_path):
    out = tmp_path / "2026-12-07-tiny-scoreboard"
    rows = "demo,torch,ort_fp32,ort_int8,genai,cold_start"
    r = run_module("bench.scoreboard", "--ckpt", str(tiny_ckpt), "--onnx", str(exported[0]), "--data",
                   str(periodic_text_file), "--threads", "1", "--quick", "--only", rows, "--out", str(out),
                   env={"OMP_NUM_THREADS": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr
    f = read(out.with_suffix(".json"), tmp_path)
    assert [row["id"] for row in f.rows] == rows.split(",")
    assert {row["id"]: row["status"] for row in f.rows} == {"demo": "read"} | {
        k: "measured" for k in rows.split(",")[1:]}
    by = {row["id"]: row for row in f.rows}
    assert by["ort_fp32"]["values"]["tokens_per_s"] > 0 and by["ort_int8"]["values"]["ratio"] > 0
    assert by["demo"]["values"]["iterations"] == json.loads((tiny_ckpt / "config.json").read_text())["iter"]
    assert out.with_suffix(".md").read_text().startswith("## Scoreboard")


@pytest.mark.slow
def test_every_row_of_a_quick_run_is_measured_or_says_why(tiny_ckpt, exported, periodic_text_file, tmp_path):
    out = tmp_path / "2026-12-07-tiny-scoreboard"
    r = run_module("bench.scoreboard", "--ckpt", str(tiny_ckpt), "--onnx", str(exported[0]), "--data",
                   str(periodic_text_file), "--threads", "1", "--quick", "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    f = read(out.with_suffix(".json"), tmp_path)
    assert [row["id"] for row in f.rows] == [row.id for row in ROWS]
    assert all(row["status"] != "skipped" or row["why"] for row in f.rows)


def test_the_docs_build_stops_on_a_scoreboard_without_a_command(tmp_path, board, monkeypatch):
    from mkdocs.exceptions import PluginError

    from bench.harness import results_files
    from docsgen import generated, hooks

    del board["rows"][2]["command"]
    path = write(tmp_path, "2026-12-07-bad-scoreboard", board)
    monkeypatch.setattr(results_files, "read_all", lambda: read_all(tmp_path))
    generated._results.cache_clear()
    page = type("Page", (), {"file": type("File", (), {"src_uri": "index.md"})})
    try:
        with pytest.raises(PluginError) as e:
            hooks.on_page_markdown((ROOT / "docs" / "index.md").read_text(), page, None, None)
    finally:
        generated._results.cache_clear()
    assert str(path) in str(e.value) and "row 3 (ort_fp32) has no command" in str(e.value)
