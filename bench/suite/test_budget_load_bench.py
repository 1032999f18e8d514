"""The time budget under load (bench/budget_load.py): each run is the demo's 8-minute training, so a full run
(four loads, ~33 minutes) is run by hand: `python -m bench.budget_load --out bench/results/DATE-CPU-budget-load.md`.
The smoke run checks the command: a 20-second budget with the machine busy the whole way (no figure is
checked: the first plan alone takes 15 steps, ~1.4 s each on a busy 2-core VM)."""

from __future__ import annotations

import json

import pytest

from bench import budget_load
from bench.harness.machine import ROOT
from gpt.data import DEFAULT_DATA_DIR


def test_budget_load(pytestconfig, tmp_path, capsys):
    if not pytestconfig.getoption("--bench-smoke"):
        pytest.skip("33 minutes of training: run `python -m bench.budget_load --out FILE.md` by hand")
    out = tmp_path / "budget-load.md"
    assert budget_load.main(["--budget", "20s", "--loads", "busy for the last two minutes", "--out", str(out),
                             "--data-dir", str(ROOT / DEFAULT_DATA_DIR)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    (row,) = report["rows"]
    assert row["variant"] == "busy for the last two minutes" and row["busy_s"] == [-100, None]
    assert row["used"] > 0 and row["iters"] > 0 and row["val_loss"] < 4.5, row
    assert report["machine"] and report["command"]
    assert "| busy for the last two minutes |" in out.read_text()
    assert "| busy for the last two minutes |" in capsys.readouterr().out
