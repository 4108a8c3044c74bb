"""The trainer and the evaluation: the shared-forward head path, BatchNorm statistics, learning,
resume, callbacks, and noisy evaluation against plain references."""

import copy
import os

import pytest
import torch
import torch.nn.functional as F

from dat.config import resolve
from dat.data import load_dataset
from dat.evaluate import _evaluate_general, evaluate
from dat.models import build_model
from dat.optim import DAT
from dat.noise.targets import find_targets
from dat.train import head_step, make_profile, train, two_pass_step


def _model(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return build_model("cnn6", True, 1, 8, 10, width=4, hidden=16).to(dtype)


def _dat(model, choice="last-linear", alpha=200.0, seed=3, lr=0.0, device="device-A", p=1):
    targets = find_targets(model, choice)
    params = dict(model.named_parameters())
    profile = make_profile(device, targets)
    return DAT(model.parameters(), torch.optim.SGD, targets=targets, sampler=profile.sampler("low-rank", k=10),
               target_params={l.name: params[l.name] for l in targets.layers}, alpha=alpha, p=p,
               generator=torch.Generator().manual_seed(seed), lr=lr)


def _batch(dtype=torch.float64):
    x, y = load_dataset("digits").train.tensors
    return x[:32].to(dtype), y[:32]


@pytest.mark.parametrize("p", [1, 2])
def test_shared_forward_head_path_matches_two_pass_gradient(p):
    x, y = _batch()
    model = _model()
    ref = copy.deepcopy(model)
    opt = _dat(model, p=p)          # lr = 0: the step leaves w in place and the gradient in .grad
    head_step(model, opt, x, y)
    # Reference: Algorithm 1 written out with two full forward/backward passes per perturbation.
    targets = find_targets(ref, "last-linear")
    params = dict(ref.named_parameters())
    W = params["classifier.weight"]
    F.cross_entropy(ref(x), y).backward()
    g = W.grad.clone()
    etas = make_profile("device-A", targets).sampler("low-rank", k=10).sample(p, torch.Generator().manual_seed(3))
    w0 = W.detach().clone()
    total = {n: torch.zeros_like(q) for n, q in params.items()}
    for eta in etas.double():
        delta = targets.eta_to_deltas(eta, {"classifier.weight": w0})["classifier.weight"]
        with torch.no_grad():
            W.copy_(w0 + 200.0 * (g * delta).sum() / (delta * delta).sum() * delta)
        ref.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        for n, q in params.items():
            total[n] += q.grad / p
    for n, q in model.named_parameters():
        assert torch.allclose(q.grad, total[n], rtol=1e-9, atol=1e-12), n
        assert torch.equal(q, dict(copy.deepcopy(model).named_parameters())[n])


@pytest.mark.parametrize("choice, step", [("last-linear", head_step), ("all-analog", two_pass_step)])
def test_batchnorm_statistics_move_once_per_step(choice, step):
    x, y = _batch()
    model = _model()
    ref = copy.deepcopy(model).train()
    with torch.no_grad():
        ref(x)              # one forward in train mode: what one update of the statistics looks like
    opt = _dat(model, choice)
    model.train()
    step(model, opt, x, y)
    for (name, a), b in zip(model.named_buffers(), ref.buffers()):
        assert torch.equal(a, b), name


def test_a_few_epochs_on_digits_learn(tmp_path):
    result = train(resolve("digits", method="dat-fast", epochs=4, lr_decay_every=1, eval_draws=3,
                           out=str(tmp_path / "learn.safetensors")))
    metrics = result.metrics
    assert metrics["test"]["clean"]["acc"] > 0.8          # chance is 0.1
    assert metrics["test"]["noisy"]["draws"] == 3
    # the digits preset sets a strength: alpha is the one it resolved to, recorded with it
    assert result.meta["method"] == "dat-fast" and result.meta["strength"]["alpha"] == result.meta["alpha"]
    assert result.meta["strength"]["strength"] == result.meta["config"]["strength"] == 1.0


def test_resume_continues_the_same_trajectory(tmp_path):
    cfg = dict(method="dat-fast", epochs=2, eval_draws=2, width=4, hidden=16, lr_decay_every=1)
    straight = train(resolve("digits", out=str(tmp_path / "a.safetensors"), **cfg))
    steps_per_epoch = -(-len(load_dataset("digits").train) // 64)
    seen = []
    stop_at = steps_per_epoch + 3              # in the middle of the second epoch
    first = train(resolve("digits", out=str(tmp_path / "b.safetensors"), **cfg),
                  callbacks=[lambda e, p: seen.append((e, p.get("step")))],
                  should_stop=lambda: len([s for s in seen if s[0] == "step"]) >= stop_at)
    assert first.checkpoint_path is None and seen[-1][0] == "cancelled"
    assert os.path.exists(str(tmp_path / "b.safetensors") + ".resume.pt")
    events = []
    resumed = train(resolve("digits", out=str(tmp_path / "b.safetensors"), **cfg),
                    callbacks=[lambda e, p: events.append((e, p))])
    assert events[0][0] == "start" and events[0][1]["start_epoch"] == 1
    assert [e for e, _ in events if e == "epoch"] == ["epoch"]
    a, b = straight.meta, resumed.meta
    from dat.checkpoint import load_checkpoint
    for (name, x), y in zip(load_checkpoint(straight.checkpoint_path).model.state_dict().items(),
                            load_checkpoint(resumed.checkpoint_path).model.state_dict().values()):
        assert torch.equal(x, y), name
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert not os.path.exists(str(tmp_path / "b.safetensors") + ".resume.pt")


def test_callbacks_see_start_steps_epochs_end(tmp_path):
    events = []
    train(resolve("digits", method="sgd", epochs=1, eval_draws=1, width=4, hidden=16,
                  out=str(tmp_path / "s.safetensors")), callbacks=[lambda e, p: events.append((e, p))])
    names = [e for e, _ in events]
    assert names[0] == "start" and names[-1] == "end" and names.count("epoch") == 1
    steps = [p for e, p in events if e == "step"]
    assert [p["step"] for p in steps] == list(range(1, steps[0]["total_steps"] + 1))


class ZeroSampler:
    def __init__(self, n):
        self.n = n

    def sample(self, num, generator):
        return torch.zeros(num, self.n)


@pytest.mark.parametrize("choice", ["last-linear", "all-analog"])
def test_zero_noise_evaluation_equals_clean_evaluation(choice):
    model = _model(torch.float32).eval()
    data = load_dataset("digits").test
    targets = find_targets(model, choice)
    result = evaluate(model, data, targets=targets, sampler=ZeroSampler(targets.n), draws=4)
    clean, noisy = result["clean"], result["noisy"]
    assert noisy["acc_per_draw"] == [clean["acc"]] * 4 and noisy["acc_std"] == 0.0
    assert abs(noisy["loss_mean"] - clean["loss"]) < 1e-12
    # And the clean numbers are those of a plain loop over the data.
    x, y = data.tensors
    with torch.no_grad():
        logits = model(x)
    assert clean["acc"] == (logits.argmax(1) == y).double().mean().item()
    assert abs(clean["loss"] - F.cross_entropy(logits.double(), y).item()) < 1e-5


def test_batched_head_noise_equals_one_model_per_draw():
    model = _model(torch.float64).eval()
    data = load_dataset("digits").test
    data = torch.utils.data.TensorDataset(data.tensors[0].double(), data.tensors[1])
    targets = find_targets(model, "last-linear")
    profile = make_profile("device-B", targets)
    fast = evaluate(model, data, profile=profile, targets=targets, draws=5, seed=11, batch_size=100)
    etas = profile.sampler("full").sample(5, torch.Generator().manual_seed(11)).double()
    deltas = targets.eta_to_deltas(etas, {"classifier.weight": model.classifier.weight.detach()})
    slow = _evaluate_general(model, data, deltas, 100, torch.device("cpu"))
    assert fast["noisy"]["acc_per_draw"] == slow["noisy"]["acc_per_draw"]
    assert abs(fast["noisy"]["loss_mean"] - slow["noisy"]["loss_mean"]) < 1e-10


def test_train_on_a_evaluate_on_b(tmp_path):
    result = train(resolve("digits", method="dat-fast", device="device-A", eval_device="device-B", epochs=1,
                           eval_draws=2, width=4, hidden=16, out=str(tmp_path / "ab.safetensors")))
    assert result.metrics["eval_device"] == "device-B" and result.meta["device"]["name"] == "device-A"
    assert result.metrics["eval_profile_hash"] != result.meta["device"]["hash"]


@pytest.mark.parametrize("field, value", [("lr", float("inf")), ("lr", float("nan")), ("lr", 0.0), ("lr", -1.0),
                                          ("alpha", float("inf")), ("rho", float("inf")),
                                          ("weight_decay", float("inf")), ("momentum", 1.0), ("epochs", 0)])
def test_invalid_hyperparameters_are_refused_where_the_config_enters(field, value):
    with pytest.raises(ValueError, match=f"Invalid {field}: expected"):
        resolve("digits", **{field: value})


def test_a_non_finite_weight_is_found_even_when_the_loss_is_finite():
    from dat.train import _non_finite

    model = _model(torch.float32)
    assert _non_finite(2.3, model) is None
    assert _non_finite(float("inf"), model) == "the loss is inf"
    name, param = list(model.named_parameters())[3]
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    assert _non_finite(2.3, model) == f"{name} holds non-finite values"


def test_a_resumed_trio_keeps_its_finished_models_and_trains_only_the_rest(tmp_path):
    from dat.train import train_trio

    config = resolve("digits", method="dat-fast", batchnorm=True, epochs=1, width=4, hidden=8, eval_draws=1)
    first = train_trio(config, folder=str(tmp_path))
    os.unlink(first["dat-b"].checkpoint_path)                 # as if the server died during dat-b
    runs = []
    again = train_trio(config, folder=str(tmp_path), keep_finished=True,
                       callbacks=[lambda e, p: runs.append(p["run"]) if e == "start" else None])
    assert runs == ["dat-b"]
    assert again["sgd"].metrics == first["sgd"].metrics and os.path.exists(again["dat-b"].checkpoint_path)
