"""Every evaluation strategy of landscape.evaluator (per-point loop, BatchNorm-folded loop, vmap, and
features once for head-only noise inside each) gives the numbers of the obviously-right plain loop:
per point a state dict, load_state_dict into a copy of the model, one forward pass, F.cross_entropy
(relative difference <= 1e-5). Models with BatchNorm after convolutions and after a linear layer,
with and without a linear head, with and without biases."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dat.data import load_dataset
from dat.noise.crossbar import PRESETS
from dat.errors import UserError
from dat.noise.profile import bind
from dat.noise.targets import find_targets
from landscape import curves, surfaces
from landscape.directions import noise_directions, target_weights, trio_plane
from landscape.evaluator import Evaluator, _ce_and_correct
from landscape.inputs import draw_eta

STRATEGIES = ("loop", "fused", "vmap")


def _randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """BatchNorm statistics and affine parameters far from the identity, so folding them matters."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.2)
            m.weight.data.copy_(torch.randn(c, generator=gen) * 0.5 + 1)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.3)
    return model.eval()


class HeadNet(nn.Module):
    """features + linear classifier; BatchNorm after a bias-free conv, a conv with bias and a linear."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Flatten(), nn.Linear(6 * 16, 12, bias=False), nn.BatchNorm1d(12), nn.ReLU())
        self.classifier = nn.Linear(12, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.classifier(self.features(x))


def _no_head_net():
    """No features/classifier split: the whole model is folded and run."""
    return nn.Sequential(nn.Conv2d(1, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(),
                         nn.Linear(5 * 64, 10))


@pytest.fixture(scope="module")
def data():
    X, Y = load_dataset("digits").train_eval.tensors
    return X[:48].clone(), Y[:48].clone()


def _trio(make):
    out = []
    for s in (1, 2, 3):
        torch.manual_seed(s)
        out.append(_randomise_batchnorm(make(), torch.Generator().manual_seed(10 + s)))
    return out


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def plain_loop(model, state, X, Y):
    """The reference: a copy of the model, load_state_dict, one forward pass."""
    m = copy.deepcopy(model).eval()
    m.load_state_dict(state)
    with torch.no_grad():
        out = m(X)
    return F.cross_entropy(out, Y).item(), (out.argmax(1) == Y).double().mean().item()


@pytest.mark.parametrize("make", [HeadNet, _no_head_net], ids=["head", "no-head"])
@pytest.mark.parametrize("targets_kind", ["last-linear", "all-analog"])
def test_every_surface_strategy_matches_the_plain_loop(data, make, targets_kind):
    X, Y = data
    trio = _trio(make)
    t = find_targets(trio[0], targets_kind)
    prof = bind(PRESETS["device-A"], t)
    kw = dict(profiles={"none": None, "A": prof}, resolution=(3, 2), draws=2, seed=4, targets=t)
    res = {s: surfaces.plane_surface(*trio, (X, Y), strategy=s, **kw) for s in STRATEGIES}
    plane = trio_plane(*trio)
    eta = draw_eta(prof, 2, 4)
    for i, a in enumerate(res["loop"].alphas):
        for j, b in enumerate(res["loop"].betas):
            state = {k: v[0] for k, v in plane.points(torch.tensor([[a, b]], dtype=torch.float64)).items()}
            clean = plain_loop(trio[0], state, X, Y)
            weights = {layer.name: state[layer.name] for layer in t.layers}
            noisy = []
            for s in range(2):
                moved = dict(state)
                for name, d in t.eta_to_deltas(eta[s], weights).items():
                    moved[name] = state[name] + d
                noisy.append(plain_loop(trio[0], moved, X, Y))
            for strategy, r in res.items():
                assert _rel(r.loss[0, i, j], clean[0]) <= 1e-5, strategy
                assert r.accuracy[0, i, j] == pytest.approx(clean[1], abs=1e-12), strategy
                assert _rel(r.loss[1, i, j], np.mean([n[0] for n in noisy])) <= 1e-5, strategy
                assert r.accuracy[1, i, j] == pytest.approx(np.mean([n[1] for n in noisy]), abs=1e-12), strategy
    for strategy, r in res.items():  # the markers are the three models themselves
        for k, m in enumerate(trio):
            assert _rel(r.marker_loss[0, k], plain_loop(m, m.state_dict(), X, Y)[0]) <= 1e-5, strategy


@pytest.mark.parametrize("targets_kind", ["last-linear", "all-analog"])
def test_every_curve_strategy_matches_the_plain_loop(data, targets_kind):
    X, Y = data
    m = _trio(HeadNet)[0]
    t = find_targets(m, targets_kind)
    prof = bind(PRESETS["device-B"], t)
    alphas = np.array([-1.5, 0.0, 0.4, 2.0])
    res = {s: curves.noise_curves({"m": m}, {"B": prof}, (X, Y), alphas=alphas, draws=2, seed=2, targets=t,
                                  strategy=s) for s in STRATEGIES}
    dirs = noise_directions(draw_eta(prof, 2, 2), t, target_weights(m, t))
    for s in range(2):
        for a_i, a in enumerate(alphas):
            state = {k: v.clone() for k, v in m.state_dict().items()}
            for name, d in dirs.items():
                state[name] = state[name] + float(a) * d[s]
            want = plain_loop(m, state, X, Y)
            for strategy, r in res.items():
                assert _rel(r.loss[0, 0, s, a_i], want[0]) <= 1e-5, strategy
                assert r.accuracy[0, 0, s, a_i] == pytest.approx(want[1], abs=1e-12), strategy


def test_auto_folds_batchnorm_on_cpu_and_falls_back_without_it(data):
    X, Y = data
    assert Evaluator(_trio(HeadNet)[0], X, Y).strategy == "fused"
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    ev = Evaluator(mlp, X, Y)
    points = {k: v.unsqueeze(0) for k, v in mlp.state_dict().items()}
    loss, _ = ev.at_points(points)  # nothing to fold: the plain per-point loop
    assert ev.strategy == "loop" and _rel(loss[0, 0], plain_loop(mlp, mlp.state_dict(), X, Y)[0]) <= 1e-5
    with pytest.raises(UserError, match="fused"):
        Evaluator(mlp, X, Y, strategy="fused")


def test_the_evaluator_leaves_the_callers_model_alone(data):
    X, Y = data
    m = _trio(HeadNet)[0]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    ev = Evaluator(m, X, Y, strategy="fused")
    points = {k: (v * 1.5 if v.is_floating_point() else v).unsqueeze(0) for k, v in m.state_dict().items()}
    ev.at_points(points)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert any(isinstance(x, nn.BatchNorm2d) for x in m.modules())


def test_cross_entropy_and_accuracy_match_torch_including_ties_and_large_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, 7, generator=gen) * 4      # [S, B, K]
    logits[0, :5] = 1e4 * torch.randn(5, 7, generator=gen)  # far from 0: the max must be subtracted
    logits[1, :6] = 0.5                                     # all tied: prediction is class 0
    logits[2, :4, 2] = logits[2, :4, 5] = 9.0               # two tied maxima: the first counts
    y = torch.randint(0, 7, (50,), generator=gen)
    y[:4] = 5
    loss, correct = _ce_and_correct(logits.transpose(1, 2).contiguous(), y)
    for s in range(3):
        assert _rel(loss[s].item(), F.cross_entropy(logits[s], y, reduction="sum").item()) <= 1e-6
        assert correct[s].item() == (logits[s].argmax(1) == y).sum().item()


def test_a_large_surface_stays_within_the_memory_budget(tmp_path):
    """61 x 61 points of a 1 MB model: unchunked, their states alone would take 3.7 GB; with a 32 MiB
    budget the run's resident memory grows by a few hundred MB at most (torch's own start-up
    allocations included)."""
    script = tmp_path / "big.py"
    script.write_text(
        "import resource, numpy as np, torch\nfrom torch import nn\n"
        "from landscape import free_plane\n"
        "torch.manual_seed(0)\n"
        "m = nn.Sequential(nn.Flatten(), nn.Linear(64, 4000), nn.ReLU(), nn.Linear(4000, 10)).eval()\n"
        "X, Y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))\n"
        "free_plane(m, (X, Y), resolution=3, memory_budget=32 << 20)  # torch warmed up\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "r = free_plane(m, (X, Y), resolution=61, memory_budget=32 << 20)\n"
        "assert np.isfinite(r.loss).all()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    grown_mib = int(out.stdout.strip().splitlines()[-1])
    assert grown_mib < 800, f"resident memory grew by {grown_mib} MiB"
