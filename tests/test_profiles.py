"""Noise profiles: structured Sigma, samplers and eigenpairs against a naively built dense Sigma."""

import math

import numpy as np
import pytest
import torch

from dat.noise.crossbar import PRESETS, CrossbarParams, wan2022_prog_std
from dat.noise.dense import DenseDevice
from dat.noise.profile import bind
from dat.noise.targets import Targets

# Two layers, 5 x 4 tiles: full tiles, partial tiles on the right and bottom edges.
SHAPES = [("a", (7, 9)), ("b", (3, 5))]
TILE = (5, 4)

PARAMS = {
    "exponential": CrossbarParams(kernel="exponential", ell=1.5, sigma_spatial=0.3, sigma_row=0.2,
                                  sigma_col=0.15, sigma_tile=0.1, prog_noise=2.0, relax_per_decade=-0.1,
                                  grad_row=0.2, grad_col=-0.3, t_seconds=100.0),
    "gaussian": CrossbarParams(kernel="gaussian", ell=2.5, sigma_spatial=0.25, sigma_row=0.05,
                               sigma_col=0.2, sigma_tile=0.12, prog_noise=1.5, t_seconds=1.0),
}


def naive_sigma_mu(p: CrossbarParams, targets: Targets):
    """Dense Sigma and mu by an explicit double loop over eta indices, straight from the formula."""
    n = targets.n
    cells = [targets.locate(i) for i in range(n)]
    prog = p.prog_noise * wan2022_prog_std(p.t_seconds)
    R0, C0 = targets.tile_shape
    sigma = np.zeros((n, n))
    mu = np.zeros(n)
    for i, a in enumerate(cells):
        mu[i] = (p.relax_per_decade * math.log10(p.t_seconds) + p.grad_row * (a["r"] / (R0 - 1) - 0.5)
                 + p.grad_col * (a["c"] / (C0 - 1) - 0.5))
        for j, b in enumerate(cells):
            if a["tile"] != b["tile"]:
                continue  # tiles are independent
            dr, dc = abs(a["r"] - b["r"]), abs(a["c"] - b["c"])
            if p.kernel == "exponential":
                k = math.exp(-(dr + dc) / p.ell)
            else:
                k = math.exp(-(dr**2 + dc**2) / (2 * p.ell**2))
            v = p.sigma_spatial**2 * k + p.sigma_tile**2
            v += p.sigma_row**2 * (dr == 0) + p.sigma_col**2 * (dc == 0) + prog**2 * (i == j)
            sigma[i, j] = v * p.scale**2
    return sigma, mu


@pytest.fixture(scope="module", params=sorted(PARAMS))
def case(request):
    p = PARAMS[request.param]
    t = Targets(SHAPES, tile=TILE)
    sigma, mu = naive_sigma_mu(p, t)
    return bind(p, t), torch.from_numpy(sigma), torch.from_numpy(mu)


def test_dense_and_mean_match_the_naive_formula(case):
    prof, sigma, mu = case
    assert torch.allclose(prof.dense(), sigma, atol=1e-14)
    assert torch.allclose(prof.mean(), mu, atol=1e-14)
    assert torch.allclose(prof.variance(), sigma.diagonal(), atol=1e-14)
    assert prof.trace() == pytest.approx(float(sigma.trace()))


def test_structured_matvec_matches_naive_dense(case):
    prof, sigma, _ = case
    x = torch.randn(prof.n, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(prof.matvec(x), sigma @ x, atol=1e-13)
    assert torch.allclose(prof.matvec(x[:, 0]), sigma @ x[:, 0], atol=1e-13)


def test_top_k_eigenpairs_match_naive_eigh(case):
    prof, sigma, _ = case
    k = 12
    vals, vecs = prof.eig(k)
    ref = torch.linalg.eigvalsh(sigma).flip(0)[:k]
    assert torch.allclose(vals, ref, atol=1e-10)
    # eigenpairs of the naive Sigma (works with repeated eigenvalues), orthonormal
    assert torch.allclose(sigma @ vecs, vecs * vals, atol=1e-10)
    assert torch.allclose(vecs.T @ vecs, torch.eye(k, dtype=torch.float64), atol=1e-10)
    assert prof.captured_variance(k) == pytest.approx(float(ref.sum() / sigma.trace()))
    spec = prof.spectrum(5)
    assert spec["captured_variance"][-1] == pytest.approx(prof.captured_variance(5))


def test_lanczos_path_for_large_tiles_matches_dense_eigh():
    # 40 x 30 = 1200 cells per tile: above the dense-eigh threshold, so eigsh on the matvec runs.
    p = PRESETS["device-B"]
    prof = bind(p, Targets([("w", (30, 80))], tile=(40, 30)))
    vals, vecs = prof.eig(6)
    sigma = prof.dense()
    ref = torch.linalg.eigvalsh(sigma).flip(0)[:6]
    assert torch.allclose(vals, ref, rtol=1e-8, atol=1e-12)
    assert torch.allclose(sigma @ vecs, vecs * vals, atol=1e-9)


def _cov_z(samples: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor):
    """Sample mean and covariance errors in units of their standard errors (normal theory:
    Var(S_ij) = (Sigma_ij^2 + Sigma_ii Sigma_jj) / N)."""
    x = samples.double()
    N = x.shape[0]
    d = sigma.diagonal()
    zm = (x.mean(0) - mu).abs() / (d / N).sqrt().clamp(min=1e-30)
    S = torch.cov(x.T)
    se = ((sigma**2 + d[:, None] * d[None, :]) / N).sqrt()
    return zm.max().item(), ((S - sigma).abs() / se).max().item()


@pytest.mark.parametrize("method", ["full", "cholesky"])
def test_exact_samplers_have_mean_mu_and_covariance_sigma(case, method):
    prof, sigma, mu = case
    x = prof.sampler(method).sample(20000, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.shape == (20000, prof.n)
    zm, zc = _cov_z(x, mu, sigma)
    # max over n (mean) and n^2 (covariance) entries of roughly standard normal errors
    assert zm < 5 and zc < 6


def test_low_rank_samples_have_covariance_A_k_A_k_T(case):
    prof, _, mu = case
    k = 10
    sampler = prof.sampler("low-rank", k=k)
    vals, vecs = prof.eig(k)
    A = vecs * vals.sqrt()
    x = sampler.sample(20000, torch.Generator().manual_seed(3))
    zm, zc = _cov_z(x, mu, A @ A.T + 1e-12 * torch.eye(prof.n, dtype=torch.float64))
    assert zm < 5 and zc < 6
    assert torch.allclose(sampler.A.double(), A, atol=1e-6)


def test_samples_are_reproducible_from_the_generator_seed():
    prof = bind(PRESETS["device-A"], Targets(SHAPES, tile=TILE))
    for method in ("full", "low-rank", "cholesky"):
        s = prof.sampler(method)
        a = s.sample(4, torch.Generator().manual_seed(7))
        b = s.sample(4, torch.Generator().manual_seed(7))
        assert torch.equal(a, b)


def test_programming_noise_grows_with_time_since_programming():
    # Wan et al. 2022 (aihwkit fits): a few % of g_max at 1 s, about 8% after a day
    assert 0.01 < wan2022_prog_std(1.0) < 0.06
    assert 0.06 < wan2022_prog_std(86400.0) <= 0.10
    p = PRESETS["device-B"]
    t = Targets([("w", (10, 20))], tile=(64, 64))
    v = [bind(p.replace(t_seconds=s), t).variance()[0] for s in (1.0, 3600.0, 86400.0)]
    assert v[0] < v[1] < v[2]
    m = [bind(p.replace(t_seconds=s), t).mean().mean() for s in (1.0, 86400.0)]
    assert m[1] < m[0]  # relaxation lowers the mean conductance


def test_presets_are_physically_different_devices():
    a, b = PRESETS["device-A"], PRESETS["device-B"]
    assert a.kernel == "exponential" and b.kernel == "gaussian" and b.ell > 4 * a.ell
    assert a.sigma_row > 0 and b.sigma_col > 0 and b.relax_per_decade != 0


def test_dense_device_matches_its_sigma_and_samples_it():
    g = np.random.default_rng(0)
    t = Targets([("w", (3, 4))], tile=(4, 4))
    B = g.standard_normal((t.n, t.n))
    sigma = B @ B.T / t.n + 0.01 * np.eye(t.n)
    mu = g.standard_normal(t.n)
    prof = bind(DenseDevice(mu, sigma), t)
    S = torch.from_numpy(sigma)
    assert torch.allclose(prof.dense(), S)
    vals, vecs = prof.eig(3)
    assert torch.allclose(vals, torch.linalg.eigvalsh(S).flip(0)[:3])
    x = prof.sampler("full").sample(20000, torch.Generator().manual_seed(0))
    zm, zc = _cov_z(x, torch.from_numpy(mu), S)
    assert zm < 5 and zc < 6


def test_singular_dense_device_samples_with_documented_jitter():
    t = Targets([("w", (2, 3))], tile=(4, 4))
    v = np.ones(t.n)
    prof = bind(DenseDevice(np.zeros(t.n), np.outer(v, v)), t)
    s = prof.sampler("full")
    x = s.sample(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 6) and prof.whole.jitter <= 1e-8


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, err, msg",
    [
        ("sigma_row", -0.1, ValueError, "sigma_row must be >= 0"),
        ("ell", 0.0, ValueError, "ell"),
        ("ell", -2.0, ValueError, "ell"),
        ("kernel", "cauchy", ValueError, "kernel"),
        ("t_seconds", 0.5, ValueError, "t_seconds"),
        ("sigma_spatial", float("nan"), ValueError, "finite"),
        ("scale", float("inf"), ValueError, "finite"),
        ("grad_col", "big", TypeError, "number"),
    ],
)
def test_bad_crossbar_params_raise(field, value, err, msg):
    with pytest.raises(err, match=msg):
        PRESETS["device-A"].replace(**{field: value})


def test_unknown_field_raises():
    with pytest.raises(ValueError, match="unknown CrossbarParams field"):
        PRESETS["device-A"].replace(sigma_foo=1.0)


def test_k_larger_than_n_raises():
    prof = bind(PRESETS["device-A"], Targets([("w", (2, 3))], tile=(4, 4)))
    with pytest.raises(ValueError, match="k must be between 1 and n = 6, found k = 7"):
        prof.sampler("low-rank", k=7)
    with pytest.raises(ValueError, match="found k = 0"):
        prof.eig(0)


def test_wrong_sizes_and_arguments_raise():
    t = Targets([("w", (2, 3))], tile=(4, 4))
    with pytest.raises(ValueError, match="n = 5 but the targets have n = 6"):
        bind(DenseDevice(np.zeros(5), np.eye(5)), t)
    prof = bind(PRESETS["device-B"], t)
    with pytest.raises(ValueError, match=r"shape \[6\]"):
        prof.matvec(torch.zeros(5))
    with pytest.raises(TypeError, match="torch.Generator"):
        prof.sampler("full").sample(2, 0)
    with pytest.raises(ValueError, match="method"):
        prof.sampler("exact")
    with pytest.raises(TypeError, match="device must be"):
        bind("device-A", t)


@pytest.mark.parametrize(
    "mu, sigma, msg",
    [
        (np.zeros(3), np.zeros((3, 2)), "square"),
        (np.zeros(3), np.array([[1, 0.5, 0], [0, 1, 0], [0, 0, 1.0]]), "symmetric"),
        (np.zeros(2), np.array([[1.0, np.nan], [np.nan, 1.0]]), "finite"),
        (np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]), "most negative eigenvalue -1"),
        (np.zeros(2), -np.eye(2), "negative variances"),
        (np.zeros(3), np.eye(2), r"shape \(2,\)"),
        (np.array([0.0, np.inf]), np.eye(2), "mu must be finite"),
    ],
)
def test_bad_dense_devices_raise(mu, sigma, msg):
    with pytest.raises(ValueError, match=msg):
        DenseDevice(mu, sigma)


def test_repair_clips_negative_eigenvalues_and_reports():
    d = DenseDevice(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]), repair=True)
    rep = d.repair_report
    assert rep["repaired"] and rep["most_negative_eigenvalue"] == pytest.approx(-1.0)
    assert rep["clipped_eigenvalues"] == 1 and rep["frobenius_change"] == pytest.approx(1.0)
    assert np.linalg.eigvalsh(d.sigma).min() > -1e-12


def test_loss_relevant_low_rank_of_a_dense_device_matches_the_structured_one():
    # the same Sigma given densely (projected with the n x n P) and as a crossbar (per tile)
    t = Targets([("h", (5, 6)), ("classifier.weight", (4, 9))], tile=(5, 4))
    structured = bind(PARAMS["gaussian"], t)
    dense = bind(DenseDevice(structured.mean().numpy(), structured.dense().numpy()), t)
    a, b = structured.lowrank(6, "relevant"), dense.lowrank(6, "relevant")
    assert a.k_used == b.k_used
    assert torch.allclose(a.values, b.values, rtol=1e-9)
    assert torch.allclose(a.factor() @ a.factor().T, b.factor() @ b.factor().T, atol=1e-10)
    assert torch.allclose(a.mean, b.mean, atol=1e-14)
    assert structured.relevant_trace() == pytest.approx(dense.relevant_trace(), rel=1e-12)


def test_low_rank_sampler_keeps_a_tied_group_whole():
    # device-B on a 64 x 10 head: eigenvalues 7-12 are tied, so k = 10 samples with 12 columns
    prof = bind(PRESETS["device-B"], Targets([("classifier.weight", (10, 64))]))
    s = prof.sampler("low-rank", k=10)
    assert s.k == s.A.shape[1] == s.lowrank.k_used == 12 and s.lowrank.tie["size"] == 6


def test_stress_scales_the_covariance_by_its_square_and_keeps_the_mean():
    from dat.noise.io import apply_stress

    t = Targets(SHAPES, tile=TILE)
    base = bind(PARAMS["exponential"], t)
    for device in (PARAMS["exponential"], DenseDevice(base.mean().numpy(), base.dense().numpy(), name="d")):
        stressed = bind(apply_stress(device, 2.5), t)
        assert torch.allclose(stressed.dense(), 6.25 * base.dense(), rtol=1e-12)
        assert torch.allclose(stressed.mean(), base.mean(), atol=1e-15)
        assert stressed.name.endswith("-stress2.5")
        assert apply_stress(device, 1.0) is device
    with pytest.raises(ValueError, match="stress"):
        apply_stress(PARAMS["exponential"], 0.0)
