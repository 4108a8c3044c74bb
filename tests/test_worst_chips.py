"""Worst chips (1st and 5th percentile over draws) next to every accuracy under noise: the Compare
numbers, the transfer heat map, the aging figure and the Models page's tables."""

import numpy as np
import pytest

from landscape.results import Curves


def _curves():
    rng = np.random.default_rng(0)
    M, D, S, A = 2, 2, 40, 3
    acc_t = rng.uniform(0.5, 1.0, (M, D, S))
    return Curves(("SGD", "DAT-A"), ("device-A", "device-B"), np.tile(np.linspace(-1, 1, A), (D, 1)),
                  rng.uniform(0, 1, (M, D, S, A)), rng.uniform(0, 1, (M, D, S, A)), np.ones((M, D)),
                  rng.uniform(0.1, 0.5, (M, D, S)), acc_t, np.array([0.05, 0.06]), np.array([0.99, 0.98]), "std", {})


def test_compare_rows_carry_the_accuracy_and_its_worst_chips():
    from landscape.summary import compare_devices

    c = _curves()
    rows = compare_devices(c).rows
    for r in rows:
        i, j = c.models.index(r["model"]), c.devices.index(r["device"])
        per_draw = np.sort(c.accuracy_at_typical[i, j])
        assert r["accuracy_at_typical"] == pytest.approx(per_draw.mean())
        # numpy's linear rule by hand: the q-th percentile of 40 values sits at rank q/100 * 39.
        for q in (1, 5):
            pos = q / 100 * (per_draw.size - 1)
            lo = int(np.floor(pos))
            expect = per_draw[lo] + (pos - lo) * (per_draw[lo + 1] - per_draw[lo])
            assert r[f"accuracy_at_typical_p{q}"] == pytest.approx(expect)
        assert r["accuracy_at_typical_p1"] <= r["accuracy_at_typical_p5"] <= r["accuracy_at_typical"]


def test_models_page_rows_show_p1_and_p5():
    from faces.dashboard.helpers import checkpoint_rows, evaluation_row

    per_draw = [0.9, 0.8, 0.95, 0.7, 0.85]
    part = {"clean": {"acc": 0.97}, "noisy": {"acc_mean": float(np.mean(per_draw)), "acc_std": 0.1, "draws": 5,
                                              "acc_per_draw": per_draw}}
    row = evaluation_row("m", "device-A", {"train": part, "test": part, "eval_seed": 0})
    assert row["test noisy p1 (%)"] == pytest.approx(round(100 * np.percentile(per_draw, 1), 2))
    assert row["test noisy p5 (%)"] == pytest.approx(round(100 * np.percentile(per_draw, 5), 2))
    (line,) = checkpoint_rows([{"name": "m", "metrics": {"test": part}}])
    assert line["test acc (noisy p1)"] == pytest.approx(np.percentile(per_draw, 1))
    (bare,) = checkpoint_rows([{"name": "m", "metrics": {"test": {"noisy": {"acc_mean": 0.8}}}}])
    assert bare["test acc (noisy p5)"] == ""


def test_transfer_heat_map_and_aging_figure_show_both_percentiles():
    from dat.aging import AgingResult
    from dat.transfer import TransferResult
    from landscape.instruments import aging_figure, transfer_figure

    rng = np.random.default_rng(1)
    acc = rng.uniform(0.3, 1.0, (2, 2, 2, 20))
    res = TransferResult(("SGD-BN", "DAT-Full on device-A"), ("device-A", "device-B"), (0, 1), acc,
                         np.ones((2, 2, 2)), np.ones((2, 2)), ((), ()), {})
    trace = transfer_figure(res).data[0]
    s = res.cell("SGD-BN", "device-B")
    # the cell prints the mean, the 95 % interval's half-width and p1; the hover adds the ends and p5
    half = 100 * (s["ci95_high"] - s["ci95_low"]) / 2
    assert trace.text[0][1] == f"{100 * s['mean']:.1f}<br>± {half:.1f}<br>p1 {100 * s['p1']:.1f}"
    assert f"p1 {100 * s['p1']:.1f}, p5 {100 * s['p5']:.1f}" in trace.customdata[0][1]
    assert f"[{100 * s['ci95_low']:.1f}, {100 * s['ci95_high']:.1f}]" in trace.customdata[0][1]
    assert s["p1"] == pytest.approx(np.percentile(acc[0, 1].ravel(), 1))
    times = np.array([1.0, 3600.0])
    aging = AgingResult(("SGD-BN",), ("device-A",), ("1 s", "1 h"), times, rng.uniform(0.3, 1.0, (1, 1, 2, 2, 20)),
                        np.ones((1, 1, 2, 2)), np.ones((1, 2)), {})
    fig = aging_figure(aging, "acc")
    (p1,) = [t for t in fig.data if t.name and t.name.endswith(" p1")]
    assert np.allclose(p1.y, np.percentile(100 * aging.acc[0, 0].reshape(2, -1), 1, axis=1))
