"""Low rank: loss-relevant projection (exact invariance, PSD), tie handling, canonical vectors,
multi-tile heads. References are built independently of dat.noise.profile (explicit P from the layout
map, numpy/torch eigh of the dense matrix)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dat.noise.crossbar import PRESETS, CrossbarParams
from dat.noise.dense import DenseDevice
from dat.noise import linalg
from dat.noise.linalg import TIE_RTOL, canonical_basis
from dat.noise.profile import bind
from dat.noise.targets import Targets

# A classifier head of 6 outputs x 11 inputs on 4 x 6 tiles: three tile rows (the last partial),
# one tile column holding every output; plus a hidden layer in front (its noise is all relevant).
SHAPES = [("hidden.weight", (11, 7)), ("classifier.weight", (6, 11))]
TILE = (4, 6)
DEVICE = CrossbarParams(kernel="exponential", ell=1.5, sigma_spatial=0.05, sigma_row=0.04, sigma_col=0.02,
                        sigma_tile=0.03, prog_noise=0.5, relax_per_decade=-0.01, grad_row=0.02, grad_col=0.01,
                        t_seconds=3600.0)


def naive_projector(targets: Targets) -> torch.Tensor:
    """P over eta from the layout map alone: on the last layer, P_ij = [i = j] - [same input] / C."""
    n, last = targets.n, targets.layers[-1]
    P = torch.eye(n, dtype=torch.float64)
    inputs = {}
    for i in range(last.offset, last.offset + last.size):
        w = targets.locate(i)["weight_index"]  # W.reshape(out, in) row-major: w = c * in + i_in
        inputs.setdefault(w % last.rows, []).append(i)
    for members in inputs.values():
        for a in members:
            for b in members:
                P[a, b] -= 1.0 / last.cols
    return P


@pytest.fixture(scope="module")
def head():
    targets = Targets(SHAPES, tile=TILE, units="absolute")
    return targets, bind(DEVICE, targets), naive_projector(targets)


def test_loss_is_exactly_unchanged_along_removed_directions(head):
    targets, prof, P = head
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(32, 11, generator=g, dtype=torch.float64)
    y = torch.randint(0, 6, (32,), generator=g)
    W = torch.randn(6, 11, generator=g, dtype=torch.float64)
    z = torch.randn(targets.n, 3, generator=g, dtype=torch.float64)
    removed = z - prof.project_relevant(z)  # (I - P) z: what P removes
    loss0 = F.cross_entropy(feats @ W.T, y)
    for j in range(3):
        dW = targets.eta_to_deltas(10.0 * removed[:, j], {"hidden.weight": torch.ones(11, 7),
                                                          "classifier.weight": W})["classifier.weight"]
        assert dW.abs().max() > 1.0  # a large perturbation ...
        assert torch.allclose(F.cross_entropy(feats @ (W + dW).T, y), loss0, rtol=0, atol=1e-12)  # ... unseen
    # and P is the naive projector from the layout map
    assert torch.allclose(prof.project_relevant(z), P @ z, atol=1e-14)


def test_projected_sigma_is_psd_and_its_top_k_matches_naive(head):
    targets, prof, P = head
    sigma = prof.dense()
    sp = P @ sigma @ P
    ev = torch.linalg.eigvalsh(sp)
    assert ev.min() >= -1e-12 * ev.max()
    assert prof.relevant_trace() == pytest.approx(float(sp.trace()), rel=1e-12)
    lr = prof.lowrank(5, "relevant")
    ref = ev.flip(0)[: lr.k_used]
    assert torch.allclose(lr.values, ref, rtol=1e-9, atol=1e-14)
    V = lr.vectors
    assert torch.allclose(sp @ V, V * lr.values, atol=1e-10)          # eigenpairs of P Sigma P
    assert torch.allclose(P @ V, V, atol=1e-12)                        # inside the relevant subspace
    assert torch.allclose(lr.mean, P @ prof.mean(), atol=1e-14)
    assert lr.captured_relevant_variance == pytest.approx(float(ref.sum() / sp.trace()), rel=1e-9)
    # the plain factor's captured loss-relevant variance is ||P A_k||^2 / trace(P Sigma P)
    plain = prof.lowrank(5, "plain")
    A = plain.factor()
    assert plain.captured_relevant_variance == pytest.approx(float((P @ A).pow(2).sum() / sp.trace()), rel=1e-9)
    assert plain.captured_variance == pytest.approx(float(plain.values.sum() / sigma.trace()), rel=1e-12)


def test_relevant_sampler_draws_have_covariance_of_the_projected_factor(head):
    targets, prof, P = head
    s = prof.sampler("low-rank", k=4, lowrank="relevant")
    x = s.sample(20000, torch.Generator().manual_seed(1)).double()
    assert torch.allclose(x.mean(0), s.lowrank.mean, atol=5 * float(s.lowrank.values.max().sqrt()) / 141)
    assert torch.allclose(P @ x.T, x.T - (torch.eye(targets.n, dtype=torch.float64) - P) @ s.lowrank.mean[:, None],
                          atol=1e-5)  # centred draws lie in the relevant subspace


def _tied_dense(seed=0):
    # eigenvalues 5, 3, 2, 2, 2, 1, 0.5, 0.5: the 3rd to 5th are tied
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    lam = torch.tensor([5, 3, 2, 2, 2, 1, 0.5, 0.5], dtype=torch.float64)
    return (q * lam) @ q.T, q, lam


def test_tie_at_k_keeps_the_whole_group_and_reports_it():
    sigma, q, lam = _tied_dense()
    prof = bind(DenseDevice(np.zeros(8), sigma.numpy()), Targets([("classifier.weight", (2, 4))]))
    lr = prof.lowrank(3)
    assert lr.k_used == 5
    assert lr.tie == {"value": pytest.approx(2.0), "first": 3, "last": 5, "size": 3, "rtol": TIE_RTOL}
    # the factor's covariance is the unique top-5 part of Sigma, whatever basis the solver chose
    A = lr.factor()
    assert torch.allclose(A @ A.T, (q[:, :5] * lam[:5]) @ q[:, :5].T, atol=1e-12)
    assert prof.lowrank(2).tie is None and prof.lowrank(2).k_used == 2
    assert prof.lowrank(5).k_used == 5


def test_canonical_basis_does_not_depend_on_the_solver_basis_or_library():
    sigma, _, _ = _tied_dense(1)
    vals_t, vecs_t = torch.linalg.eigh(sigma)
    vals_n, vecs_n = np.linalg.eigh(sigma.numpy())
    group_t = vecs_t.numpy()[:, 3:6]  # ascending order: 2, 2, 2 are at 3..5
    group_n = vecs_n[:, 3:6]
    rot, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    a, b, c = canonical_basis(group_t), canonical_basis(group_n), canonical_basis(group_t @ rot)
    assert np.allclose(a, b, atol=1e-10) and np.allclose(a, c, atol=1e-10)
    assert np.allclose(a.T @ a, np.eye(3), atol=1e-12)
    # one vector: its largest-|component| entry is positive, whichever sign the solver returned
    v = vecs_n[:, [7]]
    assert np.allclose(canonical_basis(v), canonical_basis(-v))
    assert canonical_basis(v)[np.argmax(np.abs(v[:, 0])), 0] > 0


def test_identical_tiles_are_treated_alike_and_the_choice_is_deterministic():
    # a 6 x 64 head on 16 x 16 tiles: four identical tiles, each eigenvalue four times
    targets = Targets([("classifier.weight", (6, 64))], tile=(16, 16))
    prof = bind(PRESETS["device-B"], targets)
    lr = prof.lowrank(10)
    assert lr.k_used == 12 and lr.tie["size"] == 4  # 10 falls inside the third value's four copies
    tile_of = torch.div(lr.vectors.abs().argmax(0), 96, rounding_mode="floor")
    assert sorted(torch.bincount(tile_of, minlength=4).tolist()) == [3, 3, 3, 3]  # no tile preferred
    per_tile = lr.vectors.reshape(4, 96, -1)
    for t in range(1, 4):  # the vectors on tile t are those of tile 0, moved
        assert torch.equal(per_tile[t][:, tile_of == t], per_tile[0][:, tile_of == 0])
    again = bind(PRESETS["device-B"], Targets([("classifier.weight", (6, 64))], tile=(16, 16))).lowrank(10)
    assert torch.equal(again.vectors, lr.vectors) and torch.equal(again.values, lr.values)
    # eigenpairs of the dense Sigma, and the top-12 eigenvalues
    sigma = prof.dense()
    assert torch.allclose(sigma @ lr.vectors, lr.vectors * lr.values, atol=1e-10)
    assert torch.allclose(lr.values, torch.linalg.eigvalsh(sigma).flip(0)[:12], rtol=1e-9)


def test_lanczos_and_dense_eigh_give_the_same_canonical_factor(monkeypatch):
    # 40 x 30 tiles (1200 cells): Lanczos by default, a dense eigh when the threshold is raised
    targets = Targets([("classifier.weight", (30, 80))], tile=(40, 30))
    lanczos = bind(PRESETS["device-B"], targets).lowrank(6)
    monkeypatch.setattr(linalg, "SMALL_TILE", 10_000)
    dense = bind(PRESETS["device-B"], targets).lowrank(6)
    assert lanczos.k_used == dense.k_used
    assert torch.allclose(lanczos.values, dense.values, rtol=1e-8)
    assert torch.allclose(lanczos.vectors, dense.vectors, atol=1e-6)


@pytest.mark.parametrize("device", ["device-A", "device-B", "custom"])
def test_plain_factor_of_a_head_wider_than_a_tile_reports_the_relevant_trace(device):
    """A classifier whose outputs span several tile columns (a CIFAR-100 head on 64-wide tiles): the
    plain factor (DAT-Fast) is built, and its loss-relevant numbers match P Sigma P formed densely from
    the layout map; the loss-relevant factor itself says why it cannot be built."""
    params = DEVICE if device == "custom" else PRESETS[device]
    targets = Targets(SHAPES, tile=(4, 4), units="absolute")  # 6 outputs on tiles 4 wide: two tile columns
    prof = bind(params, targets)
    P = naive_projector(targets)
    sigma = prof.dense()
    sp = P @ sigma @ P
    assert prof.relevant_trace() == pytest.approx(float(sp.trace()), rel=1e-12)
    small_budget = prof._relevant_trace_across_tiles(budget_bytes=8 * targets.n * 3)  # 3 inputs at a time
    assert small_budget == pytest.approx(float(sp.trace()), rel=1e-12)
    lr = prof.lowrank(4, "plain")
    A = lr.factor()
    assert lr.captured_relevant_variance == pytest.approx(float(((P @ A) ** 2).sum() / sp.trace()), rel=1e-9)
    with pytest.raises(ValueError, match="one tile column"):
        prof.lowrank(4, "relevant")
