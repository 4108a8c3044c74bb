"""Table I: rows are run definitions (never pooled across devices or settings), n counts distinct
seeds, intervals are t-intervals over seeds, paired differences to SGD-BN, and a reproduction gives
the same numbers with 1 and 2 threads."""

import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dat.checkpoint import read_meta
from dat.config import resolve
from dat.table import load_metas, mean_interval, paired_difference, table_rows, to_csv, to_markdown
from dat.train import train

TINY = dict(epochs=1, width=4, hidden=8, eval_draws=3)
ROOT = Path(__file__).resolve().parent.parent


def _train(folder, name, **overrides):
    cfg = resolve("digits", **{**TINY, **overrides, "out": str(folder / f"{name}.safetensors"), "resume": False})
    return {**train(cfg).meta, "path": cfg.out}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    return {
        "fast-A": _train(folder, "fast-A", method="dat-fast", device="device-A"),
        "fast-B": _train(folder, "fast-B", method="dat-fast", device="device-B"),
        "bn-e1-s0": _train(folder, "bn-e1-s0", method="sgd-bn", seed=0),
        "bn-e1-s1": _train(folder, "bn-e1-s1", method="sgd-bn", seed=1),
        "bn-e2-s0": _train(folder, "bn-e2-s0", method="sgd-bn", seed=0, epochs=2),
    }


def test_dat_fast_of_device_a_and_device_b_are_not_pooled(runs):
    rows = table_rows([runs["fast-A"], runs["fast-B"]], device="device-A")
    fast = [r for r in rows if r["method"] == "dat-fast"]
    assert len(fast) == 2 and sorted(r["trained_on"] for r in fast) == ["device-A", "device-B"]
    assert all(r["n_seeds"] == 1 and r["seeds"] == [0] for r in fast)
    text = to_markdown(rows)
    assert text.count("| DAT-Fast |") == 2


def test_runs_with_different_epochs_are_shown_separately_never_averaged(runs):
    rows = table_rows([runs["bn-e1-s0"], runs["bn-e1-s1"], runs["bn-e2-s0"]], device="device-A")
    assert len(rows) == 2
    by_run = {r["run"]: r for r in rows}
    assert set(by_run) == {"epochs=1", "epochs=2"}
    assert by_run["epochs=1"]["n_seeds"] == 2 and by_run["epochs=2"]["n_seeds"] == 1
    # The 2-epoch row is that checkpoint's own number, not a mix with the 1-epoch models.
    own = 100 * read_meta(runs["bn-e2-s0"]["path"])["metrics"]["test"]["clean"]["acc"]
    assert by_run["epochs=2"]["test_clean_mean"] == pytest.approx(own)
    assert "| epochs=1 | 2 |" in to_markdown(rows) and "| epochs=2 | 1 |" in to_markdown(rows)


def test_n_counts_distinct_seeds_and_copies_of_one_seed_are_one_sample(runs, tmp_path):
    copy = tmp_path / "copy.safetensors"
    shutil.copy(runs["bn-e1-s0"]["path"], copy)
    metas = [runs["bn-e1-s0"], runs["bn-e1-s1"], {**read_meta(copy), "path": str(copy)}]
    (row,) = table_rows(metas, device="device-A")
    assert row["n_seeds"] == 2 and row["n_checkpoints"] == 3 and row["seeds"] == [0, 1]
    values = [100 * read_meta(runs[k]["path"])["metrics"]["test"]["noisy"]["acc_mean"] for k in ("bn-e1-s0", "bn-e1-s1")]
    assert row["test_noisy_mean"] == pytest.approx(np.mean(values))


def test_every_output_says_what_the_interval_is_over(runs):
    rows = table_rows([runs["bn-e1-s0"], runs["bn-e1-s1"], runs["fast-A"]], device="device-A")
    text = to_markdown(rows)
    assert "over the n seeds" in text and "n (seeds)" in text and "R = 3 noise draws" in text
    assert "t-interval" in text and "over the n pairs" in text  # DAT-Fast vs SGD-BN on their common seed 0
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    for line in table:
        assert "over the n_seeds seeds" in line["interval"] and "3 noise draws" in line["noisy_over"]
        assert line["n_seeds"] and line["eval_seed"] == "0"


def test_t_interval_matches_the_textbook_quantile_and_covers_95_percent():
    # t_{0.975, 2} = 4.302653 (any t table): values 1, 2, 3 have mean 2, sd 1.
    stats = mean_interval([1.0, 2.0, 3.0])
    assert stats["ci_high"] - 2 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert mean_interval([5.0])["ci_low"] is None
    # Coverage: 4000 samples of n = 10 normal values; the interval holds the true mean 95 % of the time.
    rng = np.random.default_rng(0)
    hits = sum(s["ci_low"] <= 3.0 <= s["ci_high"] for s in (mean_interval(rng.normal(3.0, 2.0, 10)) for _ in range(4000)))
    assert abs(hits / 4000 - 0.95) < 0.012  # 3.5 binomial standard errors


def test_paired_difference_matches_the_closed_form_for_two_degrees_of_freedom():
    # Differences 1, 2, 3: t = 2 / (1 / sqrt 3); with 2 degrees of freedom the t CDF is closed form,
    # F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so the two-sided p = 1 - t / sqrt(2 + t^2).
    d = paired_difference({0: 11.0, 1: 12.0, 2: 13.0, 7: 50.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    t = 2 / (1 / math.sqrt(3))
    assert d["seeds"] == [0, 1, 2] and d["mean"] == pytest.approx(2.0)
    assert d["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)


def test_reproduce_pairs_each_method_with_sgd_bn_over_common_seeds(tmp_path):
    from dat.table import reproduce

    result = reproduce("digits", seeds=(0, 1), folder=str(tmp_path), methods=("sgd-bn", "dat-fast"),
                       devices=("device-A",), draws=3, **{k: v for k, v in TINY.items() if k != "eval_draws"})
    (fast,) = [r for r in result["rows"] if r["method"] == "dat-fast"]
    # Reference: differences of the checkpoints' own test noisy accuracies, seed by seed.
    acc = {(m, s): 100 * read_meta(tmp_path / f"{m}-s{s}.safetensors")["metrics"]["test"]["noisy"]["acc_mean"]
           for m in ("sgd-bn", "dat-fast") for s in (0, 1)}
    diffs = [acc[("dat-fast", s)] - acc[("sgd-bn", s)] for s in (0, 1)]
    assert fast["paired"]["n"] == 2 and fast["paired"]["mean"] == pytest.approx(np.mean(diffs))
    assert "Paired difference to SGD-BN" in result["markdown"] and "torch threads 1" in result["markdown"]
    settings = json.loads((tmp_path / "table1.json").read_text())["settings"]
    assert settings["threads"] == 1 and settings["draws"] == 3
    body = _latex_body((tmp_path / "table1.tex").read_text())  # the paper's layout: one row per method
    assert [r[0] for r in body] == ["SGD-BN", "DAT-Fast"]


def _reproduce_in_subprocess(folder: Path, omp_threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(omp_threads), "MKL_NUM_THREADS": str(omp_threads),
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "faces.cli", "table", "--reproduce", "digits", "--seeds", "0", "--epochs", "1",
           "--draws", "4", "--methods", "sgd-bn,dat-fast", "--folder", str(folder), "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=str(folder.parent))
    assert done.returncode == 0, done.stderr
    assert "wall time" in done.stdout and "1 torch thread" in done.stdout


def test_reproduce_gives_identical_numbers_with_1_and_2_threads(tmp_path):
    from safetensors.torch import load_file

    one, two = tmp_path / "one", tmp_path / "two"
    _reproduce_in_subprocess(one, 1)
    _reproduce_in_subprocess(two, 2)
    names = sorted(p.name for p in one.glob("*.safetensors"))
    assert names == sorted(p.name for p in two.glob("*.safetensors")) and len(names) == 3
    for name in names:  # every tensor of every model, bit for bit
        a, b = load_file(str(one / name)), load_file(str(two / name))
        assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [list(csv.DictReader(open(f / "table1.csv"))) for f in (one, two)]
    timeless = [[{k: v for k, v in r.items() if not k.startswith("train_time")} for r in rs] for rs in rows]
    assert timeless[0] == timeless[1]


# -- Table I in the paper's layout and its exports ----------------------------------------------
def _both_devices(runs, keys=("bn-e1-s0", "bn-e1-s1", "fast-A", "fast-B")):
    metas = [runs[k] for k in keys]
    return table_rows(metas, device="device-A") + table_rows(metas, device="device-B")


def _reference_cell(row: dict, q: str) -> str:
    """mean ± t-interval half-width over the row's seeds, computed here from its per-seed values."""
    from scipy import stats

    x = np.array([v[q] for v in row["per_seed"].values()])
    if len(x) < 2:
        return f"{x.mean():.1f}"
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return f"{x.mean():.1f} ± {(high - low) / 2:.1f}"


def _latex_body(tex: str) -> list[list[str]]:
    body = tex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0]
    return [[c.strip() for c in line.removesuffix("\\\\").split(" & ")] for line in body.strip().splitlines()]


def test_latex_is_well_formed_booktabs_with_one_row_per_method_and_the_rows_numbers(runs):
    from dat.table import layout_table, to_latex

    rows = _both_devices(runs)
    laid = layout_table(rows)
    tex = to_latex(laid)
    unescaped = tex.replace("\\{", "").replace("\\}", "")
    assert unescaped.count("{") == unescaped.count("}")
    depth = 0
    for ch in unescaped:  # never closes a brace it did not open
        depth += (ch == "{") - (ch == "}")
        assert depth >= 0
    assert [tex.count(r) for r in ("\\toprule", "\\midrule", "\\bottomrule")] == [1, 1, 1]
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1
    assert "\\caption{" in tex and "95" in laid.caption and "R = 3 noise draws" in laid.caption
    assert "n training seeds" in laid.caption
    body = _latex_body(tex)
    # SGD-BN, DAT-Fast trained on A, DAT-Fast trained on B: one row each, across both devices.
    assert len(body) == 3 and [r[0] for r in body] == ["SGD-BN", "DAT-Fast", "DAT-Fast"]
    assert [r[-1] for r in body] == ["-", "device-A", "device-B"]
    n_cols = tex.split("\\begin{tabular}{", 1)[1].split("}", 1)[0]
    assert all(len(r) == len(n_cols) for r in body)
    header = laid.columns
    for line in body:
        method, trained = line[0], line[-1]
        for dev in ("device-A", "device-B"):
            (row,) = [r for r in rows if r["device"] == dev and r["trained_on"] == (trained if trained != "-" else "")
                      and {"SGD-BN": "sgd-bn", "DAT-Fast": "dat-fast"}[method] == r["method"]]
            for q, label in (("test_clean", "w/o noise"), ("test_noisy", "w/ noise"), ("test_noisy_p1", "p1"),
                             ("test_noisy_p5", "p5")):
                assert line[header.index(f"{dev} {label}")] == _reference_cell(row, q).replace("±", "$\\pm$")
            assert line[header.index(f"{dev} n")] == str(len(row["per_seed"]))
        assert line[header.index("Epochs")] == "1"
    # SGD-BN has two seeds: its cells carry an interval; the one-seed DAT rows do not.
    assert "$\\pm$" in body[0][1] and "$\\pm$" not in body[1][1]


def test_special_characters_in_names_are_escaped_and_profiles_are_shown_by_name(runs, tmp_path):
    from dat.noise.io import resolve_device, save_device
    from dat.table import latex_escape, layout_table, layout_to_csv, layout_to_markdown, to_latex

    assert latex_escape("a_b 50% & c#") == r"a\_b 50\% \& c\#"
    profile = tmp_path / "lab_50%&co.npz"
    save_device(profile, resolve_device("device-A")[0], name="lab_50%&co")
    rows = table_rows([runs["bn-e1-s0"], runs["bn-e1-s1"]], device=str(profile))
    assert rows[0]["device"] == str(profile)  # the rows keep the spec; the laid-out table shows the name
    laid = layout_table(rows)
    assert laid.devices == ["lab_50%&co"]
    tex = to_latex(laid)
    assert r"\multicolumn{5}{c}{lab\_50\%\&co}" in tex
    for text in (tex, layout_to_csv(laid), layout_to_markdown(laid)):
        assert str(tmp_path) not in text
    assert "lab_50%&co" not in tex  # only the escaped form


def test_csv_round_trip_keeps_column_order_and_labels_and_files_are_written(runs, tmp_path):
    from dat.table import layout_table, layout_to_csv, layout_to_markdown, to_latex, write_layout

    laid = layout_table(_both_devices(runs))
    text = layout_to_csv(laid)
    header, *body = list(csv.reader(io.StringIO(text)))
    assert header == laid.columns and body == laid.cells
    assert header[:1] == ["Method"] and header[-3:] == ["Time (min)", "Epochs", "Trained on"]
    assert header[1:11] == ["device-A w/o noise", "device-A w/ noise", "device-A p1", "device-A p5", "device-A n",
                            "device-B w/o noise", "device-B w/ noise", "device-B p1", "device-B p5", "device-B n"]
    paths = {k: tmp_path / f"t.{k}" for k in ("tex", "csv", "md")}
    write_layout(laid, latex=str(paths["tex"]), csv_path=str(paths["csv"]), markdown=str(paths["md"]))
    assert paths["tex"].read_text() == to_latex(laid) and paths["csv"].read_bytes().decode() == text
    assert paths["md"].read_text() == layout_to_markdown(laid)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_cli_writes_the_latex_table(runs, tmp_path, capsys):
    from faces.cli import main

    out = tmp_path / "table1.tex"
    paths = [runs[k]["path"] for k in ("bn-e1-s0", "bn-e1-s1")]
    assert main(["table", *paths, "--device", "device-A", "--latex", str(out)]) == 0
    tex = out.read_text()
    assert "\\toprule" in tex and len(_latex_body(tex)) == 1 and _latex_body(tex)[0][0] == "SGD-BN"


def test_models_page_offers_table_one_as_latex_csv_and_markdown(demo_workspace, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "ws"
    shutil.copytree(demo_workspace, root)
    monkeypatch.setenv("DAT_WORKSPACE", str(root))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
    at.switch_page("pages/3_Models.py").run()
    assert not at.exception and not at.error
    labels = {at.download_button(key=k).label for k in ("table_tex", "table_csv", "table_md")}
    assert labels == {"Table I (LaTeX)", "Table I (CSV)", "Table I (Markdown)"}
    laid = at.dataframe[1].value  # the laid-out Table I
    assert list(laid.columns)[:1] == ["Method"] and "Trained on" in laid.columns
    assert not [c for c in laid.columns if str(root) in c]
    # The demo trio: SGD-BN and DAT-Fast trained on each saved profile, devices named, never a path.
    assert len(laid) == 3 and set(laid["Method"]) == {"SGD-BN", "DAT-Fast"}
    assert set(laid["Trained on"]) == {"-", "device-A", "device-B"}
    assert {"device-A w/ noise", "device-B w/ noise"} <= set(laid.columns)


def test_a_stressed_experiment_says_so_in_every_caption():
    """The stress knob is printed wherever a result used it, and nowhere else."""
    from dat.table import stress_note

    row = {"_fields": {"stress": 2.0}}
    assert "stress 2" in stress_note([row]) and stress_note([{"_fields": {"stress": 1.0}}]) == ""
    assert stress_note([{"_fields": {}}]) == ""


def test_table_reports_the_dat_strength_and_the_alpha_it_resolved_to(runs):
    """Methods are compared at a stated strength: each DAT row carries the preset's strength and the
    alpha each checkpoint calibrated (its own metadata), in the rows, the Markdown and the CSV."""
    rows = table_rows([runs["fast-A"], runs["bn-e1-s0"]], device="device-A")
    fast = next(r for r in rows if r["method"] == "dat-fast")
    bn = next(r for r in rows if r["method"] == "sgd-bn")
    assert fast["strength"] == runs["fast-A"]["config"]["strength"] == runs["fast-A"]["strength"]["strength"]
    assert fast["alpha_mean"] == runs["fast-A"]["alpha"] == runs["fast-A"]["strength"]["alpha"]
    assert bn["strength"] is None and bn["alpha_mean"] is None
    assert f"{fast['strength']:g} (alpha {fast['alpha_mean']:.3g})" in to_markdown(rows)
    line = next(r for r in csv.DictReader(io.StringIO(to_csv(rows))) if r["method"] == "dat-fast")
    assert float(line["alpha_mean"]) == fast["alpha_mean"] and float(line["strength"]) == fast["strength"]


def test_worst_chips_p1_and_p5_in_every_form_of_table_one(runs):
    """The 1st and 5th percentile over each model's draws (np.percentile of its stored per-draw
    accuracies), averaged over seeds, in the statistics, the Markdown, the CSV and the laid-out
    table (LaTeX, CSV, Markdown)."""
    from dat.table import layout_table, layout_to_csv, layout_to_markdown, to_latex

    keys = ("bn-e1-s0", "bn-e1-s1")
    (row,) = table_rows([runs[k] for k in keys], device="device-A")
    for q, pct in (("test_noisy_p1", 1), ("test_noisy_p5", 5)):
        per_model = [100 * np.percentile(read_meta(runs[k]["path"])["metrics"]["test"]["noisy"]["acc_per_draw"], pct)
                     for k in keys]
        assert row[f"{q}_mean"] == pytest.approx(np.mean(per_model))
    assert row["test_noisy_p1_mean"] <= row["test_noisy_p5_mean"] <= row["test_noisy_mean"]
    text = to_markdown([row])
    assert "| Test noisy p1 | Test noisy p5 |" in text and _reference_cell(row, "test_noisy_p1") in text
    (line,) = csv.DictReader(io.StringIO(to_csv([row])))
    assert float(line["test_noisy_p1_mean"]) == pytest.approx(row["test_noisy_p1_mean"])
    laid = layout_table([row])
    assert {"device-A p1", "device-A p5"} <= set(laid.columns) and "1st and 5th" in laid.caption
    cell = laid.cells[0][laid.columns.index("device-A p1")]
    assert cell == _reference_cell(row, "test_noisy_p1")
    assert cell.replace("±", "$\\pm$") in to_latex(laid)
    assert "device-A p1" in layout_to_csv(laid) and "device-A p1" in layout_to_markdown(laid)
