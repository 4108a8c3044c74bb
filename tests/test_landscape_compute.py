"""Landscape numbers against a plain reference: deep-copy the model, load the weights, evaluate."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dat.data import load_dataset
from dat.noise.crossbar import PRESETS
from dat.noise.dense import DenseDevice
from dat.errors import UserError
from dat.noise.profile import bind
from dat.noise.targets import find_targets
from landscape import curves
from landscape import surfaces
from landscape.directions import filter_normalized_direction, noise_directions, trio_plane, typical_noise_norm

N_DATA = 200


class Tiny(nn.Module):
    """Body + classifier, as every dat model: forward = classifier(features(x))."""

    def __init__(self, bn: bool):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.BatchNorm1d(12) if bn else nn.Identity(),
                                  nn.ReLU())
        self.classifier = nn.Linear(12, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def data():
    b = load_dataset("digits")
    X, Y = b.train_eval.tensors
    return X[:N_DATA].clone(), Y[:N_DATA].clone()


def _trained(bn: bool, seed: int, data, steps: int = 30) -> nn.Module:
    torch.manual_seed(seed)
    m = Tiny(bn)
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    X, Y = data
    for _ in range(steps):  # train mode: BatchNorm running statistics become non-trivial
        opt.zero_grad()
        F.cross_entropy(m(X), Y).backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "batchnorm"])
def trio(request, data):
    return [_trained(request.param, s, data) for s in (1, 2, 3)]


def ref_eval(model, state, X, Y):
    """The obviously-right way: a copy of the module with the weights loaded, one forward pass."""
    m = copy.deepcopy(model)
    m.load_state_dict(state)
    m.eval()
    with torch.no_grad():
        out = m(X)
    return F.cross_entropy(out, Y).item(), (out.argmax(1) == Y).double().mean().item()


def ref_plane_state(models, alpha, beta):
    s, a, b = (m.state_dict() for m in models)
    out = {}
    for k in s:
        if s[k].is_floating_point():
            if k.endswith("running_var"):  # the documented rule: variances move along the plane in log space
                ls, la, lb = s[k].log(), a[k].log(), b[k].log()
                out[k] = (ls + alpha * (la - ls) + beta * (2 * lb - la - ls)).exp()
                continue
            u, v = a[k] - s[k], 2 * b[k] - a[k] - s[k]
            out[k] = s[k] + alpha * u + beta * v
        else:
            out[k] = s[k].clone()
    return out


def draws_of(profile, num, seed):
    return profile.sampler("full", k=10).sample(num, torch.Generator().manual_seed(seed))


def test_curves_match_reference_head_only(trio, data):
    X, Y = data
    models = {"SGD": trio[0], "DAT-A": trio[1]}
    t = find_targets(trio[0])
    profiles = {d: bind(PRESETS[d], t) for d in ("device-A", "device-B")}
    alphas = np.array([-2.0, -0.5, 0.0, 0.7, 3.0])
    res = curves.noise_curves(models, profiles, (X, Y), alphas=alphas, draws=3, seed=5)
    for i, (label, m) in enumerate(models.items()):
        for j, (dev, prof) in enumerate(profiles.items()):
            eta = draws_of(prof, 3, 5)
            for s in range(3):
                delta = t.eta_to_deltas(eta[s], {"classifier.weight": m.classifier.weight.detach()})["classifier.weight"]
                d = delta / delta.norm()
                for a_i, a in enumerate(alphas):
                    state = {k: v.clone() for k, v in m.state_dict().items()}
                    state["classifier.weight"] += float(a) * d
                    loss, acc = ref_eval(m, state, X, Y)
                    assert res.loss[i, j, s, a_i] == pytest.approx(loss, rel=1e-5, abs=2e-5)
                    assert res.accuracy[i, j, s, a_i] == pytest.approx(acc, abs=1e-12)
                state = {k: v.clone() for k, v in m.state_dict().items()}
                state["classifier.weight"] += res.typical_norm[i, j] * d
                assert res.loss_at_typical[i, j, s] == pytest.approx(ref_eval(m, state, X, Y)[0], rel=1e-5, abs=2e-5)


def test_curves_match_reference_all_analog(data):
    X, Y = data
    m = _trained(True, 4, data)
    t = find_targets(m, "all-analog")
    prof = bind(PRESETS["device-B"], t)
    alphas = np.array([-1.0, 0.0, 2.5])
    res = curves.noise_curves({"m": m}, {"B": prof}, (X, Y), alphas=alphas, draws=2, seed=1, targets=t)
    eta = draws_of(prof, 2, 1)
    weights = {layer.name: m.state_dict()[layer.name] for layer in t.layers}
    for s in range(2):
        deltas = t.eta_to_deltas(eta[s], weights)
        norm = torch.sqrt(sum((d ** 2).sum() for d in deltas.values()))
        for a_i, a in enumerate(alphas):
            state = {k: v.clone() for k, v in m.state_dict().items()}
            for name, d in deltas.items():
                state[name] += float(a) * d / norm
            assert res.loss[0, 0, s, a_i] == pytest.approx(ref_eval(m, state, X, Y)[0], rel=1e-5, abs=2e-5)


def test_surface_matches_reference_with_and_without_noise(trio, data):
    X, Y = data
    t = find_targets(trio[0])
    profiles = {"none": None, "A": bind(PRESETS["device-A"], t), "B": bind(PRESETS["device-B"], t)}
    res = surfaces.plane_surface(*trio, (X, Y), profiles=profiles, alpha_range=(-0.5, 1.5), beta_range=(-0.3, 0.8),
                          resolution=(3, 2), draws=3, seed=7, chunk_size=4)
    assert res.loss.shape == (3, 3, 2)
    for i, a in enumerate(res.alphas):
        for j, b in enumerate(res.betas):
            state = ref_plane_state(trio, float(a), float(b))
            assert res.loss[0, i, j] == pytest.approx(ref_eval(trio[0], state, X, Y)[0], rel=1e-5, abs=2e-5)
            for p, label in ((1, "A"), (2, "B")):
                eta = draws_of(profiles[label], 3, 7)
                losses = []
                for s in range(3):
                    noisy = dict(state)
                    w = state["classifier.weight"]
                    noisy["classifier.weight"] = w + t.eta_to_deltas(eta[s], {"classifier.weight": w})["classifier.weight"]
                    losses.append(ref_eval(trio[0], noisy, X, Y)[0])
                assert res.loss[p, i, j] == pytest.approx(np.mean(losses), rel=1e-5, abs=2e-5)
                assert res.loss_std[p, i, j] == pytest.approx(np.std(losses, ddof=1), rel=1e-5, abs=2e-5)


def test_surface_keeps_the_spread_of_the_draws_at_every_model_point(trio, data):
    """The std over the draws at each model's own point (loss and accuracy), and of the accuracy at
    every grid point, against one forward pass per draw of the model at its own weights plus noise."""
    X, Y = data
    t = find_targets(trio[0])
    prof = bind(PRESETS["device-B"], t)
    res = surfaces.plane_surface(*trio, (X, Y), profiles={"none": None, "B": prof}, resolution=(2, 2), draws=4, seed=5)
    eta = draws_of(prof, 4, 5)
    for c, model in enumerate(trio):
        state = model.state_dict()
        w = state["classifier.weight"]
        per_draw = []
        for s in range(4):
            noisy = dict(state)
            noisy["classifier.weight"] = w + t.eta_to_deltas(eta[s], {"classifier.weight": w})["classifier.weight"]
            per_draw.append(ref_eval(model, noisy, X, Y))
        losses, accs = np.array(per_draw).T
        assert res.marker_loss_std[1, c] == pytest.approx(np.std(losses, ddof=1), rel=1e-4, abs=2e-5)
        assert res.marker_accuracy_std[1, c] == pytest.approx(np.std(accs, ddof=1), abs=1e-9)
        assert res.marker_loss_std[0, c] == 0 and res.marker_accuracy_std[0, c] == 0  # one exact evaluation
    state = ref_plane_state(trio, float(res.alphas[0]), float(res.betas[0]))
    accs = []
    for s in range(4):
        noisy = dict(state)
        w = state["classifier.weight"]
        noisy["classifier.weight"] = w + t.eta_to_deltas(eta[s], {"classifier.weight": w})["classifier.weight"]
        accs.append(ref_eval(trio[0], noisy, X, Y)[1])
    assert res.accuracy_std[1, 0, 0] == pytest.approx(np.std(accs, ddof=1), abs=1e-9)


def test_surface_all_analog_matches_reference(data):
    X, Y = data
    trio = [_trained(True, s, data, steps=10) for s in (5, 6, 7)]
    t = find_targets(trio[0], "all-analog")
    prof = bind(PRESETS["device-A"], t)
    res = surfaces.plane_surface(*trio, (X, Y), profiles={"A": prof}, resolution=2, draws=2, seed=3, targets=t)
    eta = draws_of(prof, 2, 3)
    for i, a in enumerate(res.alphas):
        for j, b in enumerate(res.betas):
            state = ref_plane_state(trio, float(a), float(b))
            weights = {layer.name: state[layer.name] for layer in t.layers}
            losses = []
            for s in range(2):
                noisy = dict(state)
                for name, d in t.eta_to_deltas(eta[s], weights).items():
                    noisy[name] = state[name] + d
                losses.append(ref_eval(trio[0], noisy, X, Y)[0])
            assert res.loss[0, i, j] == pytest.approx(np.mean(losses), rel=1e-5, abs=2e-5)


def test_plane_puts_models_at_their_markers_exactly(trio, data):
    X, Y = data
    plane = trio_plane(*trio)
    pts = plane.points(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.5]]))
    for c, m in enumerate(trio):
        for k, v in m.state_dict().items():
            assert torch.equal(pts[k][c], v), k
    res = surfaces.plane_surface(*trio, (X, Y), resolution=(9, 12))  # paper grid: (0,0),(1,0),(0.5,0.5) on it
    for c, (label, (a, b)) in enumerate(res.markers.items()):
        own = ref_eval(trio[c], trio[c].state_dict(), X, Y)[0]
        assert res.marker_loss[0, c] == pytest.approx(own, abs=1e-6), label
        i, j = np.argmin(abs(res.alphas - a)), np.argmin(abs(res.betas - b))
        assert res.loss[0, i, j] == pytest.approx(own, abs=1e-5), label


def test_recalibrated_batchnorm_matches_reference(data):
    X, Y = data
    trio = [_trained(True, s, data, steps=10) for s in (8, 9, 10)]
    recal = X[:128]
    res = surfaces.plane_surface(*trio, (X, Y), resolution=2, bn="recalibrate", recal_dataset=(recal, Y[:128]),
                          batch_size=64)
    for i, a in enumerate(res.alphas):
        for j, b in enumerate(res.betas):
            m = copy.deepcopy(trio[0])
            m.load_state_dict(ref_plane_state(trio, float(a), float(b)))
            for mod in m.modules():
                if isinstance(mod, nn.BatchNorm1d):
                    mod.reset_running_stats()
                    mod.momentum = None
            m.train()
            with torch.no_grad():
                for k in range(0, 128, 64):
                    m(recal[k : k + 64])
            assert res.loss[0, i, j] == pytest.approx(ref_eval(m, m.state_dict(), X, Y)[0], rel=1e-5, abs=2e-5)
    interp = surfaces.plane_surface(*trio, (X, Y), resolution=2)
    assert not np.allclose(interp.loss, res.loss)


def test_free_plane_is_filter_normalised_and_matches_reference(data):
    X, Y = data
    m = _trained(True, 11, data)
    d = filter_normalized_direction(m, torch.Generator().manual_seed(0))
    w = m.state_dict()
    for name in ("body.1.weight", "classifier.weight"):
        assert torch.allclose(d[name].norm(dim=1), w[name].norm(dim=1), rtol=1e-5)
    assert torch.count_nonzero(d["classifier.bias"]) == 0 and torch.count_nonzero(d["body.2.running_mean"]) == 0
    res = surfaces.free_plane(m, (X, Y), direction_seed=0, alpha_range=(-1, 1), beta_range=(-1, 1), resolution=3)
    g = torch.Generator().manual_seed(0)
    d1, d2 = filter_normalized_direction(m, g), filter_normalized_direction(m, g)
    for i, a in enumerate(res.alphas):
        for j, b in enumerate(res.betas):
            state = {k: (v + float(a) * d1[k] + float(b) * d2[k]) if v.is_floating_point() else v for k, v in w.items()}
            assert res.loss[0, i, j] == pytest.approx(ref_eval(m, state, X, Y)[0], rel=1e-5, abs=2e-5)
    assert res.marker_loss[0, 0] == pytest.approx(ref_eval(m, w, X, Y)[0], abs=1e-6)


def test_chunks_compose_to_the_whole_surface(trio, data):
    X, Y = data
    t = find_targets(trio[0])
    profiles = {"none": None, "A": bind(PRESETS["device-A"], t)}
    seen = []
    whole = surfaces.plane_surface(*trio, (X, Y), profiles=profiles, resolution=3, draws=2, chunk_size=100)
    split = surfaces.plane_surface(*trio, (X, Y), profiles=profiles, resolution=3, draws=2, chunk_size=1,
                            progress=lambda done, total: seen.append((done, total)))
    np.testing.assert_allclose(whole.loss, split.loss, rtol=1e-6, atol=1e-6)
    assert seen[-1] == (12, 12) and len(seen) == 12


def test_typical_noise_norm_is_the_rms_draw_norm(trio):
    t = find_targets(trio[0], "all-analog")
    prof = bind(PRESETS["device-B"], t)
    weights = {layer.name: trio[0].state_dict()[layer.name] for layer in t.layers}
    eta = draws_of(prof, 4000, 0)
    deltas = t.eta_to_deltas(eta, weights)
    sq = sum(d.reshape(4000, -1).double().pow(2).sum(1) for d in deltas.values())
    r = typical_noise_norm(prof, t, weights)
    # E||delta||^2 estimated from 4000 draws: within 5 standard errors
    assert abs(sq.mean().item() - r ** 2) < 5 * sq.std().item() / np.sqrt(4000)
    dirs = noise_directions(eta[:5], t, weights)
    norms = torch.sqrt(sum(d.reshape(5, -1).pow(2).sum(1) for d in dirs.values()))
    torch.testing.assert_close(norms, torch.ones(5))


def test_default_alphas_cover_the_typical_norm(trio, data):
    t = find_targets(trio[0])
    res = curves.noise_curves({"m": trio[0]}, {"A": bind(PRESETS["device-A"], t)}, data, draws=2, num_alphas=7,
                         span=2.0, max_samples=50)
    r = res.typical_norm[0, 0]
    np.testing.assert_allclose(res.alphas[0], np.linspace(-2 * r, 2 * r, 7))


def test_architecture_mismatch_names_the_tensor(data):
    a, b = Tiny(False), Tiny(False)
    c = Tiny(False)
    c.classifier = nn.Linear(12, 9)
    c.features = c.features  # same body, different head
    with pytest.raises(ValueError, match="classifier.weight"):
        surfaces.plane_surface(a, b, c, data)
    with pytest.raises(ValueError, match="running_mean"):
        surfaces.plane_surface(a, b, Tiny(True), data)


def test_bad_inputs_raise_clear_errors(trio, data):
    t = find_targets(trio[0])
    prof = bind(PRESETS["device-A"], t)
    with pytest.raises(ValueError, match="band"):
        curves.noise_curves({"m": trio[0]}, {"A": prof}, data, band="iqr")
    with pytest.raises(ValueError, match="bn must be"):
        surfaces.plane_surface(*trio, data, bn="freeze")
    with pytest.raises(ValueError, match="alpha_range"):
        surfaces.plane_surface(*trio, data, alpha_range=(1, 0))
    other = bind(DenseDevice(np.zeros(4), np.eye(4)), find_targets(nn.Sequential(nn.Linear(2, 2))))
    with pytest.raises(ValueError, match="n = 4"):
        curves.noise_curves({"m": trio[0]}, {"X": other}, data, targets=t)
    with pytest.raises(TypeError, match="dataset"):
        curves.noise_curves({"m": trio[0]}, {"A": prof}, [1, 2, 3])


# ------------------------------------------------------------------------------------------------
# Strategies: the per-point loop (channels-last for conv nets, features once for head noise) and
# vmap give the plain loop's numbers.
# ------------------------------------------------------------------------------------------------
class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 16, 12), nn.ReLU())
        self.classifier = nn.Linear(12, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))


@pytest.fixture(scope="module")
def conv_trio():
    X, Y = load_dataset("digits").train_eval.tensors
    X, Y = X[:120].clone(), Y[:120].clone()
    out = []
    for s in (1, 2, 3):
        torch.manual_seed(s)
        m = TinyConv()
        opt = torch.optim.Adam(m.parameters(), lr=0.02)
        for _ in range(15):
            opt.zero_grad()
            F.cross_entropy(m(X), Y).backward()
            opt.step()
        out.append(m.eval())
    return out, (X, Y)


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


@pytest.mark.parametrize("targets_kind", ["last-linear", "all-analog"])
def test_surface_strategies_agree_with_the_plain_loop(conv_trio, targets_kind):
    trio, (X, Y) = conv_trio
    t = find_targets(trio[0], targets_kind)
    profiles = {"none": None, "A": bind(PRESETS["device-A"], t)}
    kw = dict(profiles=profiles, resolution=(3, 2), draws=2, seed=4, targets=t)
    res = {s: surfaces.plane_surface(*trio, (X, Y), strategy=s, **kw) for s in ("loop", "vmap")}
    small = surfaces.plane_surface(*trio, (X, Y), strategy="loop", memory_budget=1 << 20, batch_size=7, chunk_size=2, **kw)
    for name in ("loss", "accuracy", "marker_loss"):
        assert _rel(getattr(res["vmap"], name), getattr(res["loop"], name)) <= 1e-5, name
        assert _rel(getattr(small, name), getattr(res["loop"], name)) <= 1e-5, name
    eta = draws_of(profiles["A"], 2, 4)
    for i, a in enumerate(res["loop"].alphas):
        for j, b in enumerate(res["loop"].betas):
            state = ref_plane_state(trio, float(a), float(b))
            assert _rel(res["loop"].loss[0, i, j], ref_eval(trio[0], state, X, Y)[0]) <= 1e-5
            weights = {layer.name: state[layer.name] for layer in t.layers}
            losses = []
            for s in range(2):
                noisy = dict(state)
                for name, d in t.eta_to_deltas(eta[s], weights).items():
                    noisy[name] = state[name] + d
                losses.append(ref_eval(trio[0], noisy, X, Y)[0])
            assert _rel(res["loop"].loss[1, i, j], np.mean(losses)) <= 1e-5


@pytest.mark.parametrize("targets_kind", ["last-linear", "all-analog"])
def test_curve_strategies_agree_with_the_plain_loop(conv_trio, targets_kind):
    trio, (X, Y) = conv_trio
    m = trio[0]
    t = find_targets(m, targets_kind)
    prof = bind(PRESETS["device-B"], t)
    alphas = np.array([-1.5, 0.0, 0.4, 2.0])
    res = {s: curves.noise_curves({"m": m}, {"B": prof}, (X, Y), alphas=alphas, draws=2, seed=2, targets=t, strategy=s)
           for s in ("loop", "vmap")}
    assert _rel(res["vmap"].loss, res["loop"].loss) <= 1e-5
    eta = draws_of(prof, 2, 2)
    weights = {layer.name: m.state_dict()[layer.name] for layer in t.layers}
    for s in range(2):
        deltas = t.eta_to_deltas(eta[s], weights)
        norm = torch.sqrt(sum((d ** 2).sum() for d in deltas.values()))
        for a_i, a in enumerate(alphas):
            state = {k: v.clone() for k, v in m.state_dict().items()}
            for name, d in deltas.items():
                state[name] += float(a) * d / norm
            assert _rel(res["loop"].loss[0, 0, s, a_i], ref_eval(m, state, X, Y)[0]) <= 1e-5


def test_head_curves_in_small_memory_pieces_match(conv_trio):
    trio, (X, Y) = conv_trio
    t = find_targets(trio[0])
    prof = bind(PRESETS["device-A"], t)
    kw = dict(num_alphas=41, draws=3, seed=1)
    big = curves.noise_curves({"m": trio[0]}, {"A": prof}, (X, Y), **kw)
    small = curves.noise_curves({"m": trio[0]}, {"A": prof}, (X, Y), memory_budget=1 << 20, batch_size=9, **kw)
    assert _rel(small.loss, big.loss) <= 1e-5
    np.testing.assert_array_equal(small.accuracy, big.accuracy)


def test_grid_chunks_are_the_grid_then_the_markers():
    alphas, betas = np.linspace(0, 1, 4), np.linspace(-1, 0, 3)
    marks = np.array([[0.0, 0.0], [1.0, 0.0]])
    chunks = surfaces.GridChunks(alphas, betas, marks, 5)
    aa, bb = np.meshgrid(alphas, betas, indexing="ij")
    want = np.concatenate([np.stack([aa.ravel(), bb.ravel()], 1), marks])
    assert len(chunks) == 3
    np.testing.assert_array_equal(np.concatenate([chunks[j] for j in range(len(chunks))]), want)
    # A huge grid costs nothing until a chunk is asked for.
    huge = surfaces.GridChunks(np.linspace(0, 1, 10 ** 6), np.linspace(0, 1, 10 ** 6), marks, 64)
    assert len(huge) == -(-(10 ** 12 + 2) // 64) and huge[len(huge) - 1].shape == (2, 2)


def test_chunk_sizes_follow_the_memory_budget(conv_trio):
    from landscape.evaluator import Evaluator

    trio, (X, Y) = conv_trio
    small, big = (Evaluator(trio[0], X, Y, memory_budget=b) for b in (1 << 20, 1 << 30))
    assert small.points_per_chunk(17, 120) < big.points_per_chunk(17, 120)
    assert small.batch_for() * small.act_bytes <= 1 << 20 and big.batch_for() == len(Y)


def test_memory_stays_bounded_for_a_huge_alpha_grid(tmp_path):
    """200,000 alphas: without chunking the head logits alone would take 1.6 GB."""
    script = tmp_path / "huge.py"
    script.write_text(
        "import resource, numpy as np, torch\n"
        "from torch import nn\n"
        "from dat.data import load_dataset\nfrom dat.noise.crossbar import PRESETS\nfrom dat.noise.profile import bind\n"
        "from dat.noise.targets import find_targets\nfrom landscape import curves\n"
        "class M(nn.Module):\n"
        "    def __init__(s):\n        super().__init__(); s.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 8));"
        " s.classifier = nn.Linear(8, 10)\n"
        "    def features(s, x): return s.body(x)\n    def forward(s, x): return s.classifier(s.features(x))\n"
        "torch.manual_seed(0); m = M().eval(); X, Y = load_dataset('digits').train_eval.tensors\n"
        "p = bind(PRESETS['device-A'], find_targets(m))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "r = curves.noise_curves({'m': m}, {'A': p}, (X[:100], Y[:100]), num_alphas=200000, draws=2,\n"
        "                   max_evaluations=None, memory_budget=16 << 20)\n"
        "assert np.isfinite(r.loss).all()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    # MiB of growth: results and pieces (about 0.4-0.55 GB with the allocator's slack), not the 1.6 GB of
    # [S, A, K] head logits an unchunked evaluation holds
    assert int(out.stdout.split()[-1]) < 800


def test_evaluation_limit_is_enforced_and_can_be_lifted(trio, data):
    t = find_targets(trio[0])
    prof = bind(PRESETS["device-A"], t)
    with pytest.raises(UserError, match=r"3,108 model evaluations"):
        surfaces.plane_surface(*trio, data, profiles={"none": None, "A": prof}, resolution=(16, 16), draws=11,
                        max_evaluations=3000)
    with pytest.raises(UserError, match=r"5 alphas \+ 2\)\) would take 14 model"):
        curves.noise_curves({"m": trio[0]}, {"A": prof}, data, alphas=np.linspace(-1, 1, 5), draws=2,
                       max_evaluations=10)
    curves.noise_curves({"m": trio[0]}, {"A": prof}, data, alphas=np.linspace(-1, 1, 5), draws=2, max_evaluations=None,
                   max_samples=20)


# ------------------------------------------------------------------------------------------------
# The command line refuses unbounded or meaningless sizes with a message (exit 2, no traceback).
# ------------------------------------------------------------------------------------------------
TRIO_ARGS = ["--sgd", "checkpoints/sgd.safetensors", "--dat-a", "checkpoints/dat-a.safetensors",
             "--dat-b", "checkpoints/dat-b.safetensors", "--formats", "none", "--no-cache", "--quiet"]
ONE_ARGS = ["--checkpoint", "SGD=checkpoints/sgd.safetensors", "--formats", "none", "--no-cache", "--quiet"]


@pytest.mark.parametrize("argv, message", [
    (["1d", *ONE_ARGS, "--num-alphas", "1000000"], "40,000,080 model evaluations"),
    (["2d", *TRIO_ARGS, "--resolution", "1000000", "3"], "51,000,051 model evaluations"),
    (["2d", *TRIO_ARGS, "--resolution", "1000000", "1000000"], "17,000,000,000,051 model evaluations"),
    (["1d", *ONE_ARGS, "--span", "-1"], "span: expected a positive number"),
    (["1d", *ONE_ARGS, "--draws", "0"], "draws: expected an integer >= 1"),
    (["2d", *TRIO_ARGS, "--draws", "0"], "draws: expected an integer >= 1"),
    (["2d", *TRIO_ARGS, "--resolution", "1", "3"], "resolution: expected grid points along alpha and beta"),
    (["2d", *TRIO_ARGS, "--memory-mb", "0"], "--memory-mb: expected"),
], ids=["num-alphas", "resolution-1e6x3", "resolution-1e6x1e6", "span", "draws-1d", "draws-2d", "resolution-1",
        "memory"])
def test_cli_refuses_bad_sizes(argv, message, tmp_path, capsys):
    from faces.cli import main

    code = main(["landscape", *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert "alpha_range" not in err
    assert not (tmp_path / "o").exists()


def test_cli_limit_can_be_lifted(tmp_path, capsys, monkeypatch):
    from faces.cli import main

    from landscape import inputs

    monkeypatch.setattr(inputs, "MAX_EVALUATIONS", 10)
    argv = ["landscape", "1d", *ONE_ARGS, "--device", "A=device-A", "--num-alphas", "5", "--draws", "2",
            "--max-samples", "30", "--out", str(tmp_path / "o")]
    assert main(argv) == 2 and "14 model evaluations, more than the limit of 10" in capsys.readouterr().err
    assert main(argv + ["--allow-large"]) == 0
    assert (tmp_path / "o" / "numbers.npz").exists()


def test_cli_refusal_in_a_subprocess_has_no_traceback(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "faces.cli", "landscape", "2d", *TRIO_ARGS, "--resolution", "1000000",
                          "3", "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "51,000,051 model evaluations" in out.stderr
    assert "Traceback" not in out.stderr
