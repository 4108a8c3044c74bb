"""Profile views on one crossbar tile: checked against the DESIGN formula and statistical facts."""

import numpy as np
import plotly.graph_objects as go
import pytest

from dat import profile_figures as pf
from dat.noise.crossbar import CrossbarParams, wan2022_prog_std
from dat.noise.fitted import FittedTile


def design_sigma(p: CrossbarParams, R: int, C: int) -> np.ndarray:
    """Sigma of one tile written straight from DESIGN.md (slow, obviously right)."""
    s = p.stds()
    d = lambda m: np.abs(np.subtract.outer(np.arange(m), np.arange(m)))
    k = (lambda x: np.exp(-x / p.ell)) if p.kernel == "exponential" else (lambda x: np.exp(-x**2 / (2 * p.ell**2)))
    sigma = np.zeros((R * C, R * C))
    for i in range(R * C):
        for j in range(R * C):
            (ri, ci), (rj, cj) = divmod(i, C), divmod(j, C)
            sigma[i, j] = (s["spatial"] ** 2 * k(abs(ri - rj)) * k(abs(ci - cj))
                           + s["row"] ** 2 * (ri == rj) + s["col"] ** 2 * (ci == cj)
                           + s["tile"] ** 2 + s["prog"] ** 2 * (i == j))
    return sigma


MIXED = CrossbarParams(name="mixed", kernel="gaussian", ell=1.5, sigma_spatial=0.03, sigma_row=0.01,
                       sigma_col=0.02, sigma_tile=0.005, prog_noise=0.5)


def test_sigma_window_is_the_top_left_block_of_the_design_formula():
    R, C = 5, 6
    profile = pf.tile_profile(MIXED, (R, C))
    expected = design_sigma(MIXED, R, C)
    np.testing.assert_allclose(pf.sigma_window(profile, 17), expected[:17, :17], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(pf.sigma_window(profile, 1000), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kernel", ["exponential", "gaussian"])
def test_correlation_along_lines_is_the_spatial_kernel_when_only_spatial_noise(kernel):
    p = CrossbarParams(kernel=kernel, ell=3.0, sigma_spatial=0.04, prog_noise=0.0)
    c = pf.correlation_profile(pf.tile_profile(p, (16, 16)))
    d = np.arange(8)
    kernel_values = np.exp(-d / 3.0) if kernel == "exponential" else np.exp(-d**2 / 18.0)
    np.testing.assert_allclose(c["word_line"], kernel_values, rtol=1e-12)
    np.testing.assert_allclose(c["bit_line"], kernel_values, rtol=1e-12)


def test_word_line_shared_noise_correlates_a_row_and_not_a_column():
    p = CrossbarParams(sigma_row=0.02, prog_noise=1.0, t_seconds=1.0)
    c = pf.correlation_profile(pf.tile_profile(p, (8, 8)), ref=(2, 3))
    share = 0.02**2 / (0.02**2 + wan2022_prog_std(1.0) ** 2)
    np.testing.assert_allclose(c["word_line"], [1.0] + [share] * 4, rtol=1e-12)
    np.testing.assert_allclose(c["bit_line"], [1.0] + [0.0] * 5, atol=1e-15)
    assert c["distance"].shape == c["corr"].shape == (64,)


def test_noise_maps_have_the_profiles_mean_and_variance():
    R, C, num = 4, 5, 4000
    profile = pf.tile_profile(MIXED.replace(grad_col=0.05), (R, C))
    maps = pf.noise_maps(profile, num=num, seed=1)
    assert maps.shape == (num, R, C)
    flat = maps.reshape(num, -1)
    sigma = design_sigma(MIXED, R, C)
    # Sample mean within 5 standard errors; sample covariance within 15% of the largest variance.
    se = np.sqrt(np.diag(sigma) / num)
    assert np.all(np.abs(flat.mean(0) - profile.mean().numpy()) < 5 * se)
    assert np.abs(np.cov(flat.T) - sigma).max() < 0.15 * np.diag(sigma).max()
    np.testing.assert_array_equal(pf.noise_maps(profile, 2, seed=7), pf.noise_maps(profile, 2, seed=7))


def test_a_fitted_tile_is_viewed_on_its_own_measured_shape():
    rng = np.random.default_rng(0)
    fitted = FittedTile(k=3).fit(rng.normal(size=(40, 3, 4)) * 0.05)
    profile = pf.tile_profile(fitted, (64, 64))
    assert (profile.targets.layers[0].rows, profile.targets.layers[0].cols) == (3, 4)
    np.testing.assert_allclose(pf.sigma_window(profile, 12), fitted.sigma_, rtol=1e-12)


def test_figures_share_one_colour_scale_and_mark_the_chosen_k():
    a, b = pf.tile_profile(MIXED, (6, 6)), pf.tile_profile(MIXED.replace(scale=2.0), (6, 6))
    maps = {"A": pf.noise_maps(a, 2), "B": pf.noise_maps(b, 2)}
    fig = pf.noise_maps_figure(maps)
    heat = [t for t in fig.data if isinstance(t, go.Heatmap)]
    assert len(heat) == 4
    limit = max(np.abs(m).max() for m in maps.values())
    assert all(t.zmin == -limit and t.zmax == limit for t in heat)
    spec = pf.spectrum_figure({"A": a.spectrum(10), "B": b.spectrum(10)}, k=4)
    assert [s["x0"] for s in spec.layout.shapes] == [4, 4]
    assert len(pf.correlation_figure({"A": pf.correlation_profile(a)}).data) == 2
    assert isinstance(pf.sigma_figure(pf.sigma_window(a, 10), "A"), go.Figure)


def test_bad_inputs_say_what_was_expected():
    profile = pf.tile_profile(MIXED, (4, 4))
    with pytest.raises(ValueError, match="reference cell"):
        pf.correlation_profile(profile, ref=(4, 0))
    with pytest.raises(ValueError, match="window"):
        pf.sigma_window(profile, 0)
    with pytest.raises(ValueError, match="num"):
        pf.noise_maps(profile, 0)
