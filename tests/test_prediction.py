"""The device-sharpness prediction beside the measured loss increase (Compare page, `dat landscape
compare`): the measured increase against a slow loop, one recipe for CLI and page, the rank
correlation against its textbook formula, the cache, and the bundle's columns."""

import copy
import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from faces.cli import main as cli_main
from landscape.sharpness import predicted_vs_measured, rank_correlation
from landscape.spec import LandscapeSpec, load_inputs, run_spec
from landscape.results import PREDICTION_COLUMNS
from landscape.summary import compare_devices

SMALL = dict(dataset="digits", split="train", max_samples=96, batch_size=256)


@pytest.fixture(scope="module")
def trio(tiny_trio):
    return tiny_trio


@pytest.fixture(scope="module")
def compared(trio):
    spec = LandscapeSpec(kind="curves", checkpoints=trio, num_alphas=5, draws=6, seed=3, **SMALL)
    inputs = load_inputs(spec)
    curves = run_spec(spec, inputs=inputs)
    return spec, inputs, curves, compare_devices(curves)


def _ranks(x):
    """Ranks 1..n, ties sharing their mean rank (the textbook definition)."""
    x = np.asarray(x, float)
    out = np.empty(x.size)
    for i, v in enumerate(x):
        out[i] = (x < v).sum() + ((x == v).sum() + 1) / 2
    return out


def test_measured_increase_matches_a_slow_loop(compared):
    """Draw the device noise, perturb the weights to the typical norm r along each draw, evaluate the
    model, average: the comparison's measured increase and its standard error, pair by pair."""
    from dat.noise.targets import find_targets

    spec, inputs, curves, comparison = compared
    X = torch.stack([inputs.data[i][0] for i in range(spec.max_samples)])
    Y = torch.tensor([int(inputs.data[i][1]) for i in range(spec.max_samples)])
    for row in comparison.rows:
        model = inputs.models[row["model"]].eval()
        targets = find_targets(model, spec.targets, tile=(spec.tile, spec.tile), units=spec.units)
        profile = inputs.profiles[row["device"]]
        weights = {n: w.detach() for n, w in model.named_parameters() if n in {l.name for l in targets.layers}}
        eta = profile.sampler("full").sample(spec.draws, torch.Generator().manual_seed(spec.seed)).float()
        mu, var = profile.mean().double(), profile.variance().double()
        w64 = {n: w.double() for n, w in weights.items()}
        sq = targets.eta_to_deltas(var + mu * mu, w64)
        ones = targets.eta_to_deltas(torch.ones_like(mu), w64)
        r = float(sum((sq[n] * ones[n]).sum() for n in sq).sqrt())    # sqrt(E ||delta||^2)
        with torch.no_grad():
            clean = float(F.cross_entropy(model(X), Y))
            increases = []
            for s in range(spec.draws):
                deltas = targets.eta_to_deltas(eta[s:s + 1], weights)
                norm = float(sum(d.pow(2).sum() for d in deltas.values()).sqrt())
                noisy = copy.deepcopy(model)
                state = noisy.state_dict()
                for n, d in deltas.items():
                    state[n] = weights[n] + r * d[0] / norm
                noisy.load_state_dict(state)
                increases.append(float(F.cross_entropy(noisy(X), Y)) - clean)
        increases = np.array(increases)
        assert row["typical_norm"] == pytest.approx(r, rel=1e-6)
        assert row["loss_increase_at_typical"] == pytest.approx(increases.mean(), rel=1e-3, abs=1e-6)
        assert row["loss_increase_at_typical_se"] == pytest.approx(
            increases.std(ddof=1) / np.sqrt(spec.draws), rel=1e-2, abs=1e-6)


def test_rank_correlation_is_spearman_over_all_pairs(compared):
    spec, inputs, curves, comparison = compared
    pred = predicted_vs_measured(spec, comparison, inputs, probes=8)
    p = [r["predicted_increase"] for r in pred.rows]
    m = [r["measured_increase"] for r in pred.rows]
    assert pred.correlation["pairs"] == len(comparison.rows) == 6      # 3 models x 2 devices
    rp, rm = _ranks(p), _ranks(m)
    expect = np.corrcoef(rp, rm)[0, 1]                                   # Pearson of the ranks
    assert pred.correlation["spearman"] == pytest.approx(expect, abs=1e-12)
    from scipy import stats
    assert pred.correlation["spearman"] == pytest.approx(stats.spearmanr(p, m).statistic, abs=1e-12)
    # textbook formula without ties, and ties sharing a mean rank
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    d = _ranks(x) - _ranks(y)
    assert rank_correlation(x, y)["spearman"] == pytest.approx(1 - 6 * (d ** 2).sum() / (5 * (25 - 1)))
    tied = [1.0, 1.0, 2.0, 3.0]
    assert rank_correlation(tied, [4.0, 3.0, 2.0, 1.0])["spearman"] == pytest.approx(
        np.corrcoef(_ranks(tied), _ranks([4.0, 3.0, 2.0, 1.0]))[0, 1])
    assert np.isnan(rank_correlation([1.0, 2.0], [1.0, 2.0])["spearman"])


def test_prediction_rows_pair_the_right_numbers_and_go_into_summary_csv(compared, tmp_path):
    from landscape.export import bundle_files
    from landscape.sharpness import device_sharpness
    from dat.noise.targets import find_targets
    from landscape.inputs import as_tensors

    spec, inputs, curves, comparison = compared
    pred = predicted_vs_measured(spec, comparison, inputs, probes=8)
    X, Y = as_tensors(inputs.data, spec.max_samples)
    for row, p in zip(comparison.rows, pred.rows):
        assert (p["model"], p["device"]) == (row["model"], row["device"])
        assert p["measured_increase"] == row["loss_increase_at_typical"]
        assert p["measured_increase_se"] == row["loss_increase_at_typical_se"]
        model = inputs.models[row["model"]]
        targets = find_targets(model, spec.targets, tile=(spec.tile, spec.tile), units=spec.units)
        direct = device_sharpness(model, inputs.profiles[row["device"]], targets, X, Y, probes=8, seed=spec.seed)
        assert p["sharpness"] == pytest.approx(direct["sharpness"], rel=1e-9)
        assert p["sharpness_se"] == pytest.approx(direct["se"], rel=1e-9)
    merged = comparison.with_prediction(pred)
    files = bundle_files(curves, figures={}, formats=("csv", "npz"), widths=(), spec=spec, comparison=merged)
    table = list(csv.DictReader(io.StringIO(files["summary.csv"].decode())))
    assert [(r["model"], r["device"]) for r in table] == [(r["model"], r["device"]) for r in comparison.rows]
    for got, p in zip(table, pred.rows):
        for k in PREDICTION_COLUMNS:
            assert float(got[k]) == pytest.approx(float(p[k]), rel=1e-12)
        assert float(got["prediction_spearman"]) == pytest.approx(pred.correlation["spearman"])
        assert int(got["prediction_pairs"]) == 6


def test_prediction_is_cached_and_refuses_other_data(compared, tmp_path):
    spec, inputs, curves, comparison = compared
    first = predicted_vs_measured(spec, comparison, inputs, probes=4, cache=tmp_path)
    again = predicted_vs_measured(spec, comparison, inputs, probes=4, cache=tmp_path)
    assert not first.meta["cache_hit"] and again.meta["cache_hit"]
    assert first.rows == again.rows
    other = LandscapeSpec(**{**spec.to_dict(), "max_samples": 50})
    with pytest.raises(ValueError, match="samples the comparison measured on"):
        predicted_vs_measured(other, comparison, load_inputs(other), probes=4)


def test_cli_compare_and_the_page_give_identical_predictions(demo_workspace, tmp_path, monkeypatch):
    """The Compare page and `dat landscape compare` on the same trio, devices and settings: the same
    predicted and measured numbers, to the last bit (one recipe)."""
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "ws"
    shutil.copytree(demo_workspace, root)
    monkeypatch.setenv("DAT_WORKSPACE", str(root))
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    at = AppTest.from_file(app, default_timeout=300).run()
    at.switch_page("pages/6_Compare_devices.py").run()
    at.slider(key="compare_points").set_value(3)
    at.slider(key="compare_points_beta").set_value(3)
    at.number_input(key="compare_draws").set_value(2)
    at.number_input(key="compare_curve_draws").set_value(2)  # the CLI's --draws serves both
    at.button(key="FormSubmitter:compare_form-Compare").click().run()
    from faces.dashboard import jobs
    from landscape.spec import LandscapeSpec

    job = next(j for j in jobs.registry().jobs() if j.lane == jobs.LANDSCAPE_LANE)
    jobs.registry().wait(job.id, timeout=300)
    at.run()  # the page shows the finished job's result, as its progress fragment does
    assert not at.exception and not at.error
    spec = LandscapeSpec.from_dict(job.spec["specs"]["curves"])
    page_rows = job.output["prediction"].rows  # made by the compare job, shown by the page
    assert "Spearman rank correlation" in " ".join(str(m.value) for m in at.markdown)
    (shown,) = [d.value for d in at.dataframe if "predicted (nats)" in d.value.columns]
    assert list(shown["model"]) == [r["model"] for r in page_rows]

    devices = [f"--device={label}={ref}" for label, ref in spec.devices.items()]
    assert cli_main(["landscape", "compare", "--sgd", spec.checkpoints["SGD"], "--dat-a", spec.checkpoints["DAT-A"],
                     "--dat-b", spec.checkpoints["DAT-B"], *devices, "--max-samples", str(spec.max_samples),
                     "--draws", str(spec.draws), "--seed", str(spec.seed), "--resolution", "3", "3",
                     "--num-alphas", str(spec.num_alphas), "--formats", "none", "--quiet", "--no-cache",
                     "--out", str(tmp_path / "cmp")]) == 0
    table = list(csv.DictReader(io.StringIO((tmp_path / "cmp" / "curves" / "summary.csv").read_text())))
    assert len(table) == len(page_rows) == 6
    for got, p in zip(table, page_rows):
        assert (got["model"], got["device"]) == (p["model"], p["device"])
        for k in ("sharpness", "sharpness_se", "predicted_increase"):
            assert float(got[k]) == p[k]
        assert float(got["loss_increase_at_typical"]) == p["measured_increase"]
