"""Research instruments (library): correlation twins, worst chips, accuracy against time, device
sharpness, transfer matrix. Each claim is checked against an obviously-right reference."""

import json
import math

import numpy as np
import pytest
import torch

from dat.chips import chip_summary
from dat.noise.crossbar import PRESETS, preset
from dat.noise.dense import DenseDevice
from dat.errors import UserError
from dat.noise.fitted import FittedTile
from dat.noise.profile import bind
from dat.noise.targets import Targets, find_targets
from dat.noise.twins import twin, twin_device

TARGETS = Targets([("a", (7, 9)), ("b", (3, 5))], tile=(5, 4))


def _fitted_profile():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((5 * 4, 5 * 4))
    maps = rng.standard_normal((300, 5 * 4)) @ base.T * 0.05 + 0.01
    tile = FittedTile(estimator="ledoitwolf", k=3, name="meas").fit(maps.reshape(300, 5, 4))
    return bind(tile, TARGETS)


def _dense_profile():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((TARGETS.n, TARGETS.n))
    sigma = a @ a.T / TARGETS.n + np.diag(rng.uniform(0.1, 2.0, TARGETS.n))
    return bind(DenseDevice(rng.standard_normal(TARGETS.n) * 0.1, sigma, name="dense"), TARGETS)


PROFILES = {"crossbar-A": lambda: bind(PRESETS["device-A"], TARGETS), "crossbar-B": lambda: bind(PRESETS["device-B"], TARGETS),
            "fitted": _fitted_profile, "dense": _dense_profile}


# -- twins ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", sorted(PROFILES))
def test_diagonal_twin_keeps_every_cell_variance_exactly_and_drops_all_correlation(which):
    p = PROFILES[which]()
    t = twin(p, "diagonal")
    full, diag = p.dense().numpy(), t.dense().numpy()
    assert np.array_equal(np.diag(diag), np.diag(full))                 # exactly, not approximately
    assert np.array_equal(t.variance().numpy(), p.variance().numpy())
    assert np.count_nonzero(diag - np.diag(np.diag(diag))) == 0           # off-diagonals exactly zero
    assert np.array_equal(t.mean().numpy(), p.mean().numpy())


@pytest.mark.parametrize("which", sorted(PROFILES))
def test_isotropic_twin_keeps_the_total_variance_spread_evenly(which):
    p = PROFILES[which]()
    t = twin(p, "isotropic")
    full, iso = p.dense().numpy(), t.dense().numpy()
    assert math.isclose(np.trace(iso), np.trace(full), rel_tol=1e-13)
    assert np.all(np.diag(iso) == iso[0, 0])                              # one variance for every cell
    assert np.count_nonzero(iso - np.diag(np.diag(iso))) == 0
    assert np.array_equal(t.mean().numpy(), p.mean().numpy())


def test_twin_samples_have_the_twin_covariance():
    """A statistical fact: the sample covariance of the twin's exact draws approaches diag(Sigma)."""
    p = PROFILES["crossbar-B"]()
    t = twin(p, "diagonal")
    x = t.sampler("full").sample(40_000, torch.Generator().manual_seed(0)).double()
    cov = torch.cov(x.T).numpy()
    var = p.variance().numpy()
    assert np.allclose(np.diag(cov), var, rtol=0.05)
    off = cov - np.diag(np.diag(cov))
    assert np.abs(off).max() < 5 * var.max() / math.sqrt(40_000) * 2
    # the low-rank sampler (DAT-Fast) works on a twin too
    assert t.sampler("low-rank", k=4).sample(3, torch.Generator().manual_seed(0)).shape == (3, TARGETS.n)


def test_twin_saved_and_loaded_is_the_same_device(tmp_path):
    from dat.noise.io import load_device
    from dat.noise.twins import save_twin

    p = PROFILES["fitted"]()
    save_twin(tmp_path / "t.npz", p, "isotropic")
    back = bind(load_device(tmp_path / "t.npz"), TARGETS)
    assert np.array_equal(back.dense().numpy(), twin(p, "isotropic").dense().numpy())


def test_twin_rejects_an_unknown_kind():
    with pytest.raises(UserError, match="expected one of"):
        twin_device(PROFILES["dense"](), "shuffled")


# -- worst chips ---------------------------------------------------------------------------------
def test_chip_summary_matches_its_definition():
    rng = np.random.default_rng(0)
    v = rng.uniform(0.5, 1.0, 37)
    s = chip_summary(v)
    srt = np.sort(v)
    # numpy's linear rule by hand: position q/100 * (R - 1) between order statistics
    def pct(q):
        pos = q / 100 * (v.size - 1)
        lo = int(math.floor(pos))
        return srt[lo] + (pos - lo) * (srt[min(lo + 1, v.size - 1)] - srt[lo])
    assert s["mean"] == pytest.approx(v.mean(), abs=1e-15)
    assert s["se"] == pytest.approx(v.std(ddof=1) / math.sqrt(37), rel=1e-12)
    assert s["p1"] == pytest.approx(pct(1), abs=1e-15) and s["p5"] == pytest.approx(pct(5), abs=1e-15)
    assert s["p1"] <= s["p5"] <= s["mean"] and s["draws"] == 37
    with pytest.raises(UserError):
        chip_summary([])


# -- accuracy against time -----------------------------------------------------------------------
def test_profile_at_each_time_point_is_the_preset_made_with_that_time():
    from dat.aging import TIME_POINTS, profile_at

    for name in ("device-A", "device-B"):
        for _, t in TIME_POINTS:
            got = profile_at(name, TARGETS, t)
            want = bind(preset(name, t_seconds=t), TARGETS)
            assert got.content_hash() == want.content_hash()
            assert torch.equal(got.mean(), want.mean()) and torch.equal(got.dense(), want.dense())
    seconds = dict(TIME_POINTS)
    assert seconds["1 min"] == 60 and seconds["1 h"] == 3600 and seconds["1 day"] == 86400
    assert seconds["1 week"] == 7 * 86400 and seconds["1 year"] == 365.25 * 86400


def test_aging_needs_a_device_with_a_time_parameter():
    from dat.aging import device_at

    with pytest.raises(UserError, match="time parameter"):
        device_at(DenseDevice(np.zeros(2), np.eye(2)), 60.0)


# -- device sharpness ----------------------------------------------------------------------------
def _tiny(choice, samples=128):
    from dat.data import load_digits_bundle
    from dat.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn6", batchnorm=True, in_channels=1, image_size=8, num_classes=10, width=2, hidden=4)
    model.eval()
    bundle = load_digits_bundle()
    X = torch.stack([bundle.train[i][0] for i in range(samples)])
    Y = torch.stack([bundle.train[i][1] for i in range(samples)])
    return model, find_targets(model, choice, tile=(4, 4)), X, Y


def _dense_reference(model, targets, profile, X, Y):
    """tr(H Sigma_w) per layer from the dense Hessian (torch.func.hessian) and Sigma_w = M^T Sigma M,
    M the exact linear map eta -> delta (applied to the identity)."""
    from torch.func import functional_call, hessian
    import torch.nn.functional as F

    names = [layer.name for layer in targets.layers]
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    state = {k: v.detach().double() for k, v in state.items()}
    m64 = model.double()
    sizes = [state[n].numel() for n in names]
    shapes = [state[n].shape for n in names]

    def f(flat):
        parts = torch.split(flat, sizes)
        theta = {n: p.reshape(s) for n, p, s in zip(names, parts, shapes)}
        return F.cross_entropy(functional_call(m64, {**state, **theta}, (X.double(),)), Y)

    flat = torch.cat([state[n].reshape(-1) for n in names])
    H = hessian(f)(flat)
    weights = {n: state[n] for n in names}
    M = targets.eta_to_deltas(torch.eye(targets.n, dtype=torch.float64), weights)
    M = torch.cat([M[n].reshape(targets.n, -1) for n in names], dim=1)           # [n, N]
    sigma_w = M.T @ profile.dense() @ M
    HS = H @ sigma_w
    model.float()
    bounds = np.cumsum([0] + sizes)
    per = {n: float(HS.diagonal()[bounds[i]:bounds[i + 1]].sum()) for i, n in enumerate(names)}
    return float(HS.trace()), per, torch.linalg.eigvalsh(H).flip(0).numpy()


@pytest.mark.parametrize("choice", ["last-linear", "all-analog"])
def test_hutchinson_device_sharpness_matches_the_dense_trace(choice):
    from landscape.sharpness import device_sharpness

    model, targets, X, Y = _tiny(choice, samples=128 if choice == "last-linear" else 32)
    profile = bind(PRESETS["device-B"], targets)
    exact, per_exact, _ = _dense_reference(model, targets, profile, X, Y)
    s = device_sharpness(model, profile, targets, X, Y, probes=400 if choice == "last-linear" else 200, seed=3)
    assert abs(s["sharpness"] - exact / 2) < 3 * s["se"], (s["sharpness"], exact / 2, s["se"])
    if choice == "last-linear":  # a head's cross-entropy Hessian is PSD: the trace is well away from 0
        assert s["se"] < 0.2 * abs(exact / 2)  # the test has power: the error bar is small against it
    for name, v in s["per_layer"].items():
        assert abs(v["sharpness"] - per_exact[name] / 2) < 3 * v["se"] + 1e-7, (name, v, per_exact[name] / 2)
    assert sum(v["sharpness"] for v in s["per_layer"].values()) == pytest.approx(s["sharpness"], rel=1e-9)


def test_lanczos_top_eigenvalues_match_the_dense_hessian():
    from landscape.sharpness import hessian_top_eigenvalues

    model, targets, X, Y = _tiny("last-linear")
    profile = bind(PRESETS["device-A"], targets)
    _, _, dense_vals = _dense_reference(model, targets, profile, X, Y)
    vals = hessian_top_eigenvalues(model, targets, X, Y, k=3)
    assert np.allclose(vals, dense_vals[:3], rtol=1e-3, atol=1e-6)


def test_predicted_increase_includes_the_mean_shift_exactly_to_second_order():
    """With a tiny device, E[L(w + delta)] - L(w) is its second-order expansion: check the predicted
    increase (first-order + curvature terms) against a Monte-Carlo mean of the exact loss."""
    from landscape.sharpness import TargetLoss, device_sharpness

    model, targets, X, Y = _tiny("last-linear")
    profile = bind(PRESETS["device-B"].replace(scale=0.3), targets)
    f = TargetLoss(model, targets, X, Y)
    s = device_sharpness(model, profile, targets, X, Y, probes=64, seed=0, loss=f)
    R = 4000
    eta = profile.sampler("full").sample(R, torch.Generator().manual_seed(1))
    W = f.theta["classifier.weight"] + targets.eta_to_deltas(eta, f.theta)["classifier.weight"]  # [R, out, in]
    feats = model.features(X).detach()                    # the exact loss at each perturbed head
    logits = torch.einsum("bi,roi->rbo", feats, W) + model.classifier.bias.detach()
    losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), Y.repeat(R), reduction="none")
    losses = losses.view(R, -1).mean(1).double().numpy()
    measured = losses.mean() - s["clean_loss"]
    assert abs(measured - s["predicted_increase"]) < 0.1 * abs(measured) + 3 * losses.std() / math.sqrt(R)
    assert abs(s["first_order"]) > 0 and s["mean_curvature"] > 0  # device B has a mean shift


# -- transfer matrix (a tiny run shared by the tests below) ------------------------------------------
@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    from dat.config import resolve
    from dat.transfer import run_transfer

    folder = tmp_path_factory.mktemp("transfer")
    config = resolve("digits", method="dat-full", epochs=1, width=4, hidden=8)
    result = run_transfer(config, ["device-A", "device-A:diagonal"], test_devices=["device-A", "device-A:diagonal",
                          "iid-wan2022"], seeds=(0, 1), baselines=("sgd-bn",), draws=3, folder=str(folder))
    return result, folder


def test_transfer_diagonal_is_the_ordinary_noisy_evaluation_dat_eval_prints(transfer_run, capsys):
    from faces.cli import main

    result, folder = transfer_run
    for row, device in (("DAT-Full on device-A", "device-A"), ("DAT-Full on device-A:diagonal", "device-A:diagonal")):
        i, j = result.rows.index(row), result.columns.index(device)
        for k, seed in enumerate(result.seeds):
            path = result.checkpoints[i][k]
            profile_path = str(folder / "profiles" / f"{device.replace(':', '-')}.npz")
            capsys.readouterr()
            assert main(["eval", path, "--device", profile_path, "--draws", "3", "--seed", "0", "--split", "test",
                         "--json"]) == 0
            noisy = json.loads(capsys.readouterr().out)["metrics"]["test"]["noisy"]
            assert np.mean(result.acc[i, j, k]) == pytest.approx(noisy["acc_mean"], abs=1e-12)
            assert result.loss[i, j, k] == pytest.approx(noisy["loss_mean"], abs=1e-12)


def test_transfer_result_shapes_statistics_and_ablation(transfer_run):
    from dat.transfer import correlation_ablation, seed_statistics

    result, _ = transfer_run
    assert result.rows == ("SGD-BN", "DAT-Full on device-A", "DAT-Full on device-A:diagonal")
    assert result.acc.shape == (3, 3, 2, 3)
    cell = result.cell("SGD-BN", "iid-wan2022")
    per_seed = result.acc[0, 2].mean(1)
    half = 12.706204736174707 * per_seed.std(ddof=1) / math.sqrt(2)  # t(0.975, 1 dof)
    assert cell["ci95_low"] == pytest.approx(per_seed.mean() - half) and cell["ci95_high"] == pytest.approx(per_seed.mean() + half)
    assert cell["p1"] == pytest.approx(np.percentile(result.acc[0, 2].ravel(), 1))
    rows = correlation_ablation(result)
    assert [r["variant"] for r in rows] == ["device-A", "device-A:diagonal"]
    for r in rows:
        j = result.columns.index(r["variant"])
        i = result.rows.index(f"DAT-Full on {r['variant']}")
        assert r["gain"] == pytest.approx(result.acc[i, j].mean() - result.acc[0, j].mean())
    assert seed_statistics(np.ones((1, 4)))["se_draws"] == 0.0


def test_transfer_bundle_has_numbers_and_a_reproduction_record(transfer_run):
    from landscape.instruments import bundle_files
    from landscape.export import zip_bytes

    result, _ = transfer_run
    files = bundle_files(result, command="dat transfer --epochs 1", figures={}, formats=("csv", "npz"))
    assert {"numbers.csv", "numbers.npz", "reproduce.json"} <= set(files)
    record = json.loads(files["reproduce.json"])
    assert record["kind"] == "transfer" and record["spec"]["command"] == "dat transfer --epochs 1"
    assert record["labels"]["rows"] == list(result.rows)  # order kept
    lines = files["numbers.csv"].decode().splitlines()
    assert lines[0].startswith("train,test,mean,ci95_low,ci95_high,se_draws,p1,p5")
    assert len(lines) == 1 + 3 * 3
    assert zip_bytes(files)[:2] == b"PK"


def test_transfer_rejects_unknown_devices_with_a_user_error(tmp_path):
    from dat.config import resolve
    from dat.transfer import run_transfer

    with pytest.raises(UserError, match="expected a preset"):
        run_transfer(resolve("digits", epochs=1), ["device-Z"], seeds=(0,), folder=str(tmp_path))
