"""DAT strength: the calibrated alpha gives the stated mean ||alpha eps|| for every sampler, measured
through the optimizer's own perturbation (a statistical check: tolerance from the sample std)."""

import math

import pytest
import torch

from dat.config import resolve
from dat.data import load_dataset
from dat.models import build_model
from dat.optim import DAT
from dat.noise.io import make_profile
from dat.strength import calibrate_alpha, calibration_batches, target_gradient, typical_noise_norm
from dat.noise.targets import find_targets
from dat.train import train


@pytest.fixture(scope="module")
def setup():
    bundle = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("cnn6", True, 1, 8, 10, width=4, hidden=16)
    targets = find_targets(model, "last-linear")
    return bundle, model, targets


def test_typical_noise_norm_is_the_root_mean_square_draw_norm(setup):
    _, model, targets = setup
    profile = make_profile("device-B", targets)
    weights = {"classifier.weight": model.classifier.weight.detach()}
    r = typical_noise_norm(profile, targets, weights)
    eta = profile.sampler("full").sample(4000, torch.Generator().manual_seed(0))
    sq = targets.eta_to_deltas(eta, weights)["classifier.weight"].double().pow(2).sum((1, 2))
    assert abs(sq.mean() - r**2) < 5 * sq.std() / math.sqrt(len(sq))


@pytest.mark.parametrize("device", ["device-A", "device-B"])
@pytest.mark.parametrize("method,lowrank", [("low-rank", "plain"), ("low-rank", "relevant"), ("cholesky", "plain")])
def test_strength_gives_the_stated_mean_perturbation_norm(setup, device, method, lowrank):
    bundle, model, targets = setup
    profile = make_profile(device, targets)
    sampler = profile.sampler(method, k=10, lowrank=lowrank)
    strength = 0.7
    cal = calibrate_alpha(model, targets, sampler, profile, bundle.train_eval, strength, seed=5, batches=4, draws=64)
    # Measure ||alpha eps|| as the optimizer applies it: w + alpha eps_j - w, on the same batches
    # with fresh draws (a generator the calibration never saw).
    opt = DAT(model.parameters(), targets=targets, sampler=sampler, target_params={"classifier.weight": model.classifier.weight},
              alpha=cal.alpha, p=1, generator=torch.Generator().manual_seed(123), lr=0.0)
    norms = []
    w0 = model.classifier.weight.detach().clone()
    for x, y in calibration_batches(bundle.train_eval, 4, 64, seed=5):
        g = target_gradient(model, targets, x, y)["classifier.weight"]
        for _ in range(64):
            model.classifier.weight.grad = g.clone()
            opt.first_step()
            norms.append(float((model.classifier.weight.detach() - w0).norm()))
            with torch.no_grad():
                model.classifier.weight.copy_(w0)
    norms = torch.tensor(norms, dtype=torch.float64)
    measured = float(norms.mean()) / cal.r
    # both means carry sampling error over draws: the ratio's standard error, from the sample stds
    se = strength * math.sqrt((cal.sem_eps_norm / cal.mean_eps_norm) ** 2
                              + (float(norms.std()) / math.sqrt(len(norms)) / float(norms.mean())) ** 2)
    assert abs(measured - strength) < 4 * se, (measured, strength, se)
    assert cal.alpha == pytest.approx(strength * cal.r / cal.mean_eps_norm)


def test_training_with_a_strength_records_it_and_the_alpha_it_resolved_to(tmp_path):
    cfg = resolve("digits", method="dat-fast", strength=0.5, stress=2.0, epochs=1, width=4, hidden=16, eval_draws=2,
                  out=str(tmp_path / "m.safetensors"), resume=False)
    result = train(cfg)
    s = result.meta["strength"]
    assert s["strength"] == 0.5 and result.meta["alpha"] == s["alpha"] > 0
    assert result.meta["config"]["strength"] == 0.5 and result.meta["stress"] == result.meta["config"]["stress"] == 2.0
    assert result.meta["lowrank"]["mode"] == "plain" and result.meta["lowrank"]["k_used"] >= 10
    # the alpha is the one the calibration gives at the seed's initial weights (seeded batches and draws)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model("cnn6", True, 1, 8, 10, width=4, hidden=16)
    targets = find_targets(model, "last-linear")
    profile = make_profile("device-A", targets, stress=cfg.stress)
    cal = calibrate_alpha(model, targets, profile.sampler("low-rank", k=10), profile, load_dataset("digits").train_eval,
                          0.5, seed=cfg.seed + 2, batch_size=64)
    assert cal.alpha == pytest.approx(result.meta["alpha"], rel=1e-6)
