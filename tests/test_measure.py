"""Fitting a device from repeated programming maps."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dat.noise.crossbar import CrossbarParams
from dat.noise.fitted import FittedTile, fit_file, load_maps
from dat.noise.profile import bind
from dat.noise.targets import Targets

DATA = Path(__file__).resolve().parents[1] / "data"
KNOWN = CrossbarParams(kernel="gaussian", ell=1.5, sigma_spatial=0.05, sigma_row=0.02, sigma_col=0.03,
                       sigma_tile=0.01, grad_col=0.05, t_seconds=10.0)
TILE = (4, 5)


def known_profile():
    return bind(KNOWN, Targets([("tile", (TILE[1], TILE[0]))], tile=TILE))


def draws(num, seed=0):
    x = known_profile().sampler("full").sample(num, torch.Generator().manual_seed(seed))
    return x.double().numpy().reshape(num, *TILE)


@pytest.mark.parametrize("estimator", ["ledoitwolf", "oas"])
def test_fit_recovers_a_known_profile_within_sampling_error(estimator):
    N = 4000
    fit = FittedTile(estimator=estimator).fit(draws(N))
    prof = known_profile()
    sigma, mu = prof.dense().numpy(), prof.mean().numpy()
    d = np.diag(sigma)
    assert np.all(np.abs(fit.mu_ - mu) < 5 * np.sqrt(d / N))
    # sampling error of each entry, plus the bias of shrinking towards (trace/m) I
    se = np.sqrt((sigma**2 + np.outer(d, d)) / N)
    target = np.trace(sigma) / len(d) * np.eye(len(d))
    bias = fit.shrinkage_ * np.abs(sigma - target)
    assert np.all(np.abs(fit.sigma_ - sigma) < 6 * se + bias)
    assert 0 <= fit.shrinkage_ < 0.05  # many samples: little shrinkage needed
    assert fit.tile_shape_ == TILE and fit.n_samples_ == N


def test_shrinkage_grows_when_samples_are_few():
    many = FittedTile().fit(draws(2000)).shrinkage_
    few = FittedTile().fit(draws(12)).shrinkage_
    assert few > many


def test_report_captured_variance_matches_eigenvalues():
    fit = FittedTile(k=3).fit(draws(500))
    ev = np.sort(np.linalg.eigvalsh(fit.sigma_))[::-1]
    rep = fit.report()
    assert rep["captured_variance"] == pytest.approx(ev[:3].sum() / ev.sum())
    assert rep["n_samples"] == 500 and rep["tile_shape"] == list(TILE) and rep["estimator"] == "ledoitwolf"


def test_bound_fitted_tile_repeats_over_tiles_with_sub_blocks_on_edges():
    fit = FittedTile().fit(draws(300))
    targets = Targets([("w", (7, 6))], tile=TILE)  # rows 6 = 4 + 2, cols 7 = 5 + 2: partial tiles
    prof = bind(fit, targets)
    dense, mean = prof.dense().numpy(), prof.mean().numpy()
    cells = [targets.locate(i) for i in range(targets.n)]
    for i, a in enumerate(cells):
        ia = a["r"] * TILE[1] + a["c"]
        assert mean[i] == fit.mu_[ia]
        for j, b in enumerate(cells):
            ref = fit.sigma_[ia, b["r"] * TILE[1] + b["c"]] if a["tile"] == b["tile"] else 0.0
            assert dense[i, j] == ref
    x = torch.randn(targets.n, 2, dtype=torch.float64)
    assert torch.allclose(prof.matvec(x), torch.from_numpy(dense) @ x)
    assert prof.sampler("full").sample(3, torch.Generator().manual_seed(0)).shape == (3, targets.n)


def test_npz_and_csv_files_round_trip(tmp_path):
    maps = draws(30)
    np.savez(tmp_path / "m.npz", maps=maps)
    assert np.array_equal(load_maps(tmp_path / "m.npz"), maps)
    # the documented layout: a "# rows=R cols=C" header, then one sample of rows*cols numbers per line
    np.savetxt(tmp_path / "m.csv", maps.reshape(len(maps), -1), delimiter=",", fmt="%.17g",
               header=f"rows={maps.shape[1]} cols={maps.shape[2]}", comments="# ")
    assert np.array_equal(load_maps(tmp_path / "m.csv"), maps)
    # a square tile needs no header
    sq = maps[:, :4, :4].reshape(30, 16)
    np.savetxt(tmp_path / "sq.csv", sq, delimiter=",")
    assert load_maps(tmp_path / "sq.csv").shape == (30, 4, 4)


def test_example_measurement_is_the_documented_device():
    maps = load_maps(DATA / "example_measurement.npz")
    assert maps.shape == (200, 16, 16)
    with np.load(DATA / "example_measurement.npz") as z:
        source = json.loads(str(z["source"]))
    assert source["tile"] == [16, 16] and source["seed"] == 0
    csv = load_maps(DATA / "example_measurement.csv")
    assert csv.shape == (40, 16, 16)
    assert np.allclose(csv, maps[:40], rtol=1e-6, atol=1e-9)
    fit = fit_file(DATA / "example_measurement.npz")
    # the fitted per-cell variance agrees with the generating model's within sampling error
    params = CrossbarParams(**source["params"])
    var = sum(v**2 for v in params.stds().values())
    assert np.diag(fit.sigma_).mean() == pytest.approx(var, rel=0.1)


# -- bad input -------------------------------------------------------------------------------
def test_too_few_samples_raise_and_few_samples_warn():
    with pytest.raises(ValueError, match="at least 2 samples, found 1"):
        FittedTile().fit(draws(1))
    with pytest.warns(UserWarning, match="only 5 samples"):
        FittedTile().fit(draws(5))


@pytest.mark.parametrize(
    "maps, err, msg",
    [
        (np.zeros((10, 16)), ValueError, r"\[n_samples, rows, cols\], found shape \(10, 16\)"),
        (np.full((10, 2, 2), np.nan), ValueError, "NaN/inf"),
        (np.array([[[1.0, np.inf]]] * 3), ValueError, "NaN/inf"),
        ([["a", "b"]], TypeError, "numeric"),
    ],
)
def test_bad_maps_raise(maps, err, msg):
    with pytest.raises(err, match=msg):
        FittedTile().fit(maps)


def test_bad_estimator_raises():
    with pytest.raises(ValueError, match="estimator must be one of"):
        FittedTile(estimator="mle").fit(draws(20))


@pytest.mark.parametrize(
    "text, msg",
    [
        ("1,2,3,4\n5,6,7\n", "ragged rows"),
        ("1,2,3,4\n5,x,7,8\n", r"line 2, column 2: expected a number, found 'x'"),
        ("1,2,3\n4,5,6\n", "not a square tile"),
        ("# rows=2 cols=3\n1,2,3,4\n5,6,7,8\n", "header says 2 x 3"),
        ("1,2,3,4\n", "at least 2 samples"),
        ("1,2,3,nan\n1,2,3,4\n", "NaN/inf"),
        ("", "no samples"),
    ],
)
def test_malformed_csv_raises(tmp_path, text, msg):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=msg):
        load_maps(p)


def test_bad_files_raise(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_maps(tmp_path / "missing.npz")
    np.savez(tmp_path / "k.npz", data=np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="array named 'maps'"):
        load_maps(tmp_path / "k.npz")
    (tmp_path / "m.txt").write_text("1")
    with pytest.raises(ValueError, match=".npz or .csv"):
        load_maps(tmp_path / "m.txt")


def test_binding_needs_a_fitted_tile_of_the_targets_tile_shape():
    t = Targets([("w", (5, 4))], tile=(8, 8))
    with pytest.raises(ValueError, match="not fitted"):
        bind(FittedTile(), t)
    with pytest.raises(ValueError, match=r"build the targets with tile=\(4, 5\)"):
        bind(FittedTile().fit(draws(30)), t)
