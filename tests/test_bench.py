"""bench/run_all.py: the one benchmark command collects every bench module's rows into one table
and one CSV; every listed module keeps the rows(quick) interface, so the command cannot rot."""

import csv
import importlib
import inspect
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture()
def run_all(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("run_all")


FAKE = '''
CALLS = []


def rows(quick: bool = False):
    CALLS.append(quick)
    return [{"what": "fake plane: speed-up", "ours_s": 0.5, "baseline": "plain loop", "baseline_s": 1.5,
             "ratio": 3.0, "goal": ">= 1.2", "met": "yes", "extra": "dropped"},
            {"what": "fake, step", "ours_s": 2.0, "baseline": "other", "baseline_s": 1.0, "ratio": 2.0,
             "goal": "<= 1.1", "met": "NO"}]
'''


def test_run_all_prints_one_table_and_writes_it_as_csv(run_all, tmp_path, monkeypatch, capsys):
    (tmp_path / "fake_bench.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out" / "table.csv"
    assert run_all.main(["--quick", "--csv", str(out)], benches=["fake_bench"]) == 0
    assert sys.modules["fake_bench"].CALLS == [True]  # --quick reaches the module
    printed = capsys.readouterr().out
    assert "| fake plane: speed-up | 0.5 | plain loop | 1.5 | 3 | >= 1.2 | yes |" in printed
    assert "| fake, step | 2 | other | 1 | 2 | <= 1.1 | NO |" in printed
    assert str(out.resolve()) in printed and "Measured on" in printed
    with open(out, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [r["what"] for r in got] == ["fake plane: speed-up", "fake, step"]  # the order of the rows
    assert list(got[0]) == [*run_all.COLUMNS, "machine"] and float(got[0]["ratio"]) == 3.0
    assert got[0]["machine"] == got[1]["machine"] != ""


def test_a_row_without_a_column_is_refused(run_all, tmp_path, monkeypatch):
    (tmp_path / "broken_bench.py").write_text("def rows(quick=False):\n    return [{'what': 'x', 'ratio': 1.0}]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="ours_s"):
        run_all.collect(["broken_bench"])


def test_every_listed_benchmark_has_the_rows_interface(run_all):
    for name in run_all.BENCHES:
        params = inspect.signature(importlib.import_module(name).rows).parameters
        assert "quick" in params and params["quick"].default is False, name
        assert all(p.default is not inspect.Parameter.empty for p in params.values()), name
