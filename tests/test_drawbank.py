"""DAT-Full's exact draws in banks (one GEMM for many draws) and its Cholesky factor on disk:
the banked draws have the profile's covariance, a resume in the middle of a bank continues the
same trajectory to the bit, and the disk cache is used on a second call and never trusted when
damaged."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dat.config import resolve
from dat.data import load_dataset
from dat.noise.crossbar import PRESETS
from dat.noise import linalg
from dat.noise.dense import DenseBlock, DenseDevice
from dat.models import build_model
from dat.optim import DAT
from dat.noise.profile import DEFAULT_BANK_SIZE, DrawBank, bind, cholesky_cache_path
from dat.noise.targets import Targets, find_targets
from dat.train import train


def _dense_device(n, seed=0):
    """An explicit N(mu, Sigma): the reference covariance is the matrix handed in."""
    g = np.random.default_rng(seed)
    B = g.standard_normal((n, n))
    sigma = B @ B.T / n + 0.05 * np.eye(n)
    return DenseDevice(g.standard_normal(n), sigma, name="dense-test")


def _z_scores(x, mu, sigma):
    """Largest |error| / standard error of the sample mean and sample covariance over all entries.
    Normal theory: Var(mean_i) = Sigma_ii / N, Var(S_ij) = (Sigma_ij^2 + Sigma_ii Sigma_jj) / N."""
    x = x.double()
    N, d = x.shape[0], sigma.diagonal()
    zm = ((x.mean(0) - mu).abs() / (d / N).sqrt()).max().item()
    se = ((sigma**2 + d[:, None] * d[None, :]) / N).sqrt()
    zc = ((torch.cov(x.T) - sigma).abs() / se).max().item()
    return zm, zc


# -- the bank's draws ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["crossbar", "dense"])
def test_banked_exact_draws_have_the_profiles_covariance(kind):
    """N = 20,000 draws taken 3 at a time from banks of 7 (so takes straddle banks). With n = 48 there
    are 48 mean and 1,176 distinct covariance errors, each about standard normal: the largest of
    1,176 exceeds 4.5 with probability < 1 %, 6 with probability about 2e-6."""
    targets = Targets([("w", (6, 8))], tile=(4, 4))
    device = PRESETS["device-B"] if kind == "crossbar" else _dense_device(targets.n)
    prof = bind(device, targets)
    sigma = torch.from_numpy(device.sigma) if kind == "dense" else prof.dense()
    bank = DrawBank(prof.sampler("cholesky"), size=7)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([bank.sample(3, g) for _ in range(20_000 // 3 + 1)])[:20_000]
    zm, zc = _z_scores(x, prof.mean(), sigma)
    assert zm < 5 and zc < 6
    # consecutive draws (within and across banks) are independent: their cross-covariance is 0
    cross = (x[:-1].double() - prof.mean()).T @ (x[1:].double() - prof.mean()) / (len(x) - 1)
    d = sigma.diagonal()
    assert ((cross.abs() / (d[:, None] * d[None, :] / len(x)).sqrt()).max() < 6)


def test_bank_hands_out_the_samplers_draws_in_order():
    """The bank is the sampler's own draws, made `size` at a time: the same numbers as calling the
    sampler for whole banks with the same generator, whatever the size of each take."""
    prof = bind(PRESETS["device-A"], Targets([("w", (5, 9))], tile=(4, 4)))
    sampler = prof.sampler("cholesky")
    bank = DrawBank(sampler, size=5)
    g = torch.Generator().manual_seed(4)
    got = torch.cat([bank.sample(k, g) for k in (1, 3, 2, 7, 1, 4)])
    ref_g = torch.Generator().manual_seed(4)
    ref = torch.cat([sampler.sample(5, ref_g) for _ in range(4)])[:18]
    assert torch.equal(got, ref)


def test_triangular_product_equals_the_plain_product():
    """lower_matmul skips L's zero upper triangle in column blocks; z @ L.T is the reference."""
    g = torch.Generator().manual_seed(0)
    n = 300
    L = torch.randn(n, n, generator=g).tril()
    z = torch.randn(9, n, generator=g)
    for block in (1, 7, 64, 299, 300, 1000):
        assert torch.allclose(linalg.lower_matmul(z, L, block=block), z @ L.T, rtol=1e-5, atol=1e-4), block


def test_bank_state_round_trips_and_bad_states_are_refused():
    prof = bind(PRESETS["device-A"], Targets([("w", (4, 4))], tile=(4, 4)))
    sampler = prof.sampler("cholesky")
    a, g = DrawBank(sampler, size=6), torch.Generator().manual_seed(1)
    a.sample(4, g)
    state = a.state_dict()
    assert state["position"] == 4 and state["size"] == 6 and state["generator_state"].dtype == torch.uint8
    b, h = DrawBank(sampler, size=6), torch.Generator().manual_seed(99)
    b.load_state_dict(state, h)
    assert torch.equal(h.get_state(), g.get_state())   # the generator is where the first run left it
    assert torch.equal(b.sample(5, h), a.sample(5, g))  # 2 from the restored bank, 3 from the next one
    with pytest.raises(ValueError, match="size 6"):
        DrawBank(sampler, size=6).load_state_dict({**state, "size": 8}, h)
    with pytest.raises(ValueError, match="position"):
        DrawBank(sampler, size=6).load_state_dict({**state, "position": 9}, h)
    with pytest.raises(ValueError, match="expected a draw bank state"):
        DrawBank(sampler, size=6).load_state_dict({"position": 1}, h)
    with pytest.raises(ValueError, match="positive int"):
        DrawBank(sampler, size=0)


# -- resume in the middle of a bank ----------------------------------------------------------------
def _dat_full(seed=0, bank_size=8):
    torch.manual_seed(seed)
    model = build_model("cnn6", True, 1, 8, 10, width=4, hidden=16)
    targets = find_targets(model, "last-linear")
    params = dict(model.named_parameters())
    sampler = bind(PRESETS["device-A"], targets).sampler("cholesky")
    assert sampler.bank_size == DEFAULT_BANK_SIZE > 1  # DAT-Full banks its draws by default
    sampler.bank_size = bank_size  # a small bank, so that a few steps cross several banks
    opt = DAT(model.parameters(), torch.optim.SGD, targets=targets, sampler=sampler,
              target_params={l.name: params[l.name] for l in targets.layers}, alpha=50.0,
              generator=torch.Generator().manual_seed(seed + 1), lr=0.05, momentum=0.9)
    return model, opt


def _steps(model, opt, batches):
    for x, y in batches:
        def closure():
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss
        opt.step(closure)


def test_optimizer_resume_mid_bank_is_bit_exact(tmp_path):
    """k steps, save (model, optimizer with its bank), load into fresh objects, continue: every tensor
    equals an uninterrupted run's. The save point (step 13) is 5 draws into the second bank of 8."""
    x, y = load_dataset("digits").train.tensors
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 16 * 30, 16)]
    straight, opt = _dat_full()
    assert isinstance(opt.draws, DrawBank) and opt.draws.size == 8
    _steps(straight, opt, batches)

    model, opt = _dat_full()
    _steps(model, opt, batches[:13])
    state = opt.state_dict()
    assert state["draw_bank"]["position"] == 13 - 8
    # as the trainer does: the base optimizer's state (momentum) and the wrapper's (with the bank)
    torch.save({"model": model.state_dict(), "base": opt.base_optimizer.state_dict(), "opt": state,
                "gen": opt.generator.get_state()}, tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    model, opt = _dat_full(seed=0)
    opt.generator.manual_seed(12345)             # the resumed run must not depend on where it starts
    model.load_state_dict(saved["model"])
    opt.base_optimizer.load_state_dict(saved["base"])
    opt.load_state_dict(saved["opt"])
    assert torch.equal(opt.generator.get_state(), saved["gen"])
    _steps(model, opt, batches[13:])
    for (name, a), b in zip(straight.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_trainer_resume_mid_bank_is_bit_exact(tmp_path, monkeypatch):
    """dat-full for two epochs straight, and the same run stopped in epoch 2 and resumed from the
    end of epoch 1, whose resume file holds a bank part-way used: the checkpoints are equal tensor
    for tensor."""
    monkeypatch.setenv("DAT_WORKSPACE", str(tmp_path))  # the Cholesky cache goes to tmp_path/cache
    cfg = dict(method="dat-full", epochs=2, eval_draws=2, width=4, hidden=16, lr_decay_every=1)
    straight = train(resolve("digits", out=str(tmp_path / "a.safetensors"), **cfg))
    steps_per_epoch = -(-len(load_dataset("digits").train) // 64)
    assert steps_per_epoch % 128 != 0
    seen = []
    first = train(resolve("digits", out=str(tmp_path / "b.safetensors"), **cfg),
                  callbacks=[lambda e, p: seen.append(e)],
                  should_stop=lambda: seen.count("step") >= steps_per_epoch + 3)
    assert first.checkpoint_path is None
    state = torch.load(str(tmp_path / "b.safetensors") + ".resume.pt", weights_only=True)
    assert 0 < state["draw_bank"]["position"] < state["draw_bank"]["size"]  # mid-bank
    resumed = train(resolve("digits", out=str(tmp_path / "b.safetensors"), **cfg))
    from dat.checkpoint import load_checkpoint
    a = load_checkpoint(straight.checkpoint_path).model.state_dict()
    b = load_checkpoint(resumed.checkpoint_path).model.state_dict()
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert [h["train_loss"] for h in straight.meta["history"]] == [h["train_loss"] for h in resumed.meta["history"]]
    assert len(list((tmp_path / "cache" / "cholesky").glob("cholesky-*.safetensors"))) == 1


# -- the Cholesky factor on disk ---------------------------------------------------------------------
def _profiles():
    targets = Targets([("w", (12, 10))], tile=(8, 8))
    return {"crossbar": lambda: bind(PRESETS["device-A"], targets),
            "dense": lambda: bind(_dense_device(targets.n, seed=2), targets)}


@pytest.mark.parametrize("kind", ["crossbar", "dense"])
def test_cholesky_cache_hits_on_the_second_call(kind, tmp_path, monkeypatch):
    make = _profiles()[kind]
    first = make().sampler("cholesky", cache_dir=tmp_path)
    assert first.source == "computed"
    path = cholesky_cache_path(make(), tmp_path)
    assert path.exists() and list(tmp_path.iterdir()) == [path]  # written atomically: no temporary left
    # L L^T is Sigma (the reference: the profile's dense matrix)
    sigma = make().dense()
    assert torch.allclose((first.A.double() @ first.A.double().T), sigma, atol=1e-5 * float(sigma.diagonal().max()))

    def no_factoring(*args, **kwargs):
        raise AssertionError("the factor was computed again instead of read from the cache")

    monkeypatch.setattr(linalg, "cholesky", no_factoring)
    monkeypatch.setattr(DenseBlock, "cholesky", no_factoring)
    second = make().sampler("cholesky", cache_dir=tmp_path)   # a new profile object, as in a second run
    assert second.source == "cache" and torch.equal(second.A, first.A)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(second.sample(4, g2), first.sample(4, g1))


def test_cache_is_keyed_by_the_profile():
    make = _profiles()
    a, b = make["crossbar"](), make["dense"]()
    other = bind(PRESETS["device-B"], a.targets)
    paths = {cholesky_cache_path(p, "c") for p in (a, b, other)}
    assert len(paths) == 3
    assert cholesky_cache_path(a, "c") == cholesky_cache_path(make["crossbar"](), "c")


def _corrupt(kind, path):
    from safetensors.torch import save_file
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif kind == "flipped-bytes":  # the header intact, part of the factor overwritten
        path.write_bytes(data[:-4000] + b"\x7f" * 4000)
    elif kind == "wrong-key":
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            L, meta = f.get_tensor("L"), dict(f.metadata())
        save_file({"L": L}, str(path), metadata={**meta, "key": "0" * 64})
    elif kind == "wrong-shape":
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            L, meta = f.get_tensor("L"), dict(f.metadata())
        save_file({"L": L[:-1, :-1].contiguous()}, str(path), metadata=meta)
    elif kind == "other-matrix":  # right key and shape, but not a factor of this Sigma
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            L, meta = f.get_tensor("L"), dict(f.metadata())
        save_file({"L": (1.1 * L).contiguous()}, str(path), metadata=meta)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped-bytes", "wrong-key", "wrong-shape",
                                    "other-matrix"])
def test_corrupt_cache_file_is_rebuilt_with_a_message(damage, tmp_path):
    make = _profiles()["crossbar"]
    good = make().sampler("cholesky", cache_dir=tmp_path)
    path = cholesky_cache_path(make(), tmp_path)
    _corrupt(damage, path)
    with pytest.warns(UserWarning, match="ignoring the cached Cholesky factor"):
        rebuilt = make().sampler("cholesky", cache_dir=tmp_path)
    assert rebuilt.source == "computed" and torch.equal(rebuilt.A, good.A)
    again = make().sampler("cholesky", cache_dir=tmp_path)  # the rebuilt file is good again
    assert again.source == "cache" and torch.equal(again.A, good.A)


def test_a_cached_factor_serves_the_dense_profiles_exact_sampler_too(tmp_path, monkeypatch):
    """After DAT-Full read the factor of a dense device from the cache, evaluation's "full" sampler
    (the same Cholesky factor) does not factor Sigma again."""
    make = _profiles()["dense"]
    make().sampler("cholesky", cache_dir=tmp_path)
    monkeypatch.setattr(linalg, "cholesky", lambda *a, **k: pytest.fail("Sigma was factored again"))
    prof = make()
    banked = prof.sampler("cholesky", cache_dir=tmp_path)
    exact = prof.sampler("full")
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.allclose(exact.sample(3, g1), banked.sample(3, g2))


@pytest.mark.parametrize("n, block", [(50, 7), (64, 64), (65, 16), (10, 1024)])
def test_blocked_in_place_cholesky_equals_lapack(n, block):
    """The set-up's in-place blocked factorisation against torch.linalg.cholesky (LAPACK)."""
    g = torch.Generator().manual_seed(n)
    B = torch.randn(n, n, generator=g, dtype=torch.float64)
    sigma = B @ B.T / n + 0.1 * torch.eye(n, dtype=torch.float64)
    a = sigma.clone()
    assert linalg.potrf_inplace(a, block=block) == 0
    assert torch.allclose(a.tril(), torch.linalg.cholesky(sigma), rtol=1e-10, atol=1e-12)
    bad = sigma.clone()
    bad[n // 2, n // 2] = -1.0  # not positive definite from column n // 2 + 1 on
    assert linalg.potrf_inplace(bad, block=block) == n // 2 + 1


def test_an_unwritable_cache_costs_only_the_caching(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write the Cholesky factor"):
        s = _profiles()["crossbar"]().sampler("cholesky", cache_dir=blocker / "cholesky")
    assert s.source == "computed" and s.sample(2, torch.Generator().manual_seed(0)).shape == (2, 120)
