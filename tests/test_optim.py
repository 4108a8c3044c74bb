"""The optimizer wrappers: Algorithm 1 step by step against hand-written references."""

import copy

import pytest
import torch
import torch.nn.functional as F

from dat.models import build_model
from dat.optim import DAT, SAM, NoiseInjection
from dat.noise.targets import find_targets


class GaussianSampler:
    """eta = mu + A z with a fixed random A: any sampler with .sample(num, generator) will do here."""

    def __init__(self, n, k=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.mu = 0.01 * torch.randn(n, generator=g)
        self.A = 0.05 * torch.randn(n, k, generator=g)

    def sample(self, num, generator):
        z = torch.randn(num, self.A.shape[1], generator=generator)
        return self.mu + z @ self.A.T


def _setup(choice="last-linear", dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    model = build_model("cnn6", True, 1, 8, 10, width=4, hidden=16).to(dtype)
    x = torch.randn(16, 1, 8, 8, dtype=dtype)
    y = torch.randint(0, 10, (16,))
    targets = find_targets(model, choice)
    params = dict(model.named_parameters())
    return model, x, y, targets, {l.name: params[l.name] for l in targets.layers}


def _closure(model, x, y):
    def closure():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss
    return closure


@pytest.mark.parametrize("choice", ["last-linear", "all-analog"])
def test_alpha_zero_step_equals_base_step_to_the_bit(choice):
    model, x, y, targets, tp = _setup(choice, torch.float32)
    ref = copy.deepcopy(model)
    # The wrapper evaluates the loss twice, so BatchNorm sees the batch twice: compare in eval
    # mode, where the forward pass is a pure function of the weights.
    model.eval(); ref.eval()
    kw = dict(lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt = DAT(model.parameters(), torch.optim.SGD, targets=targets, sampler=GaussianSampler(targets.n),
              target_params=tp, alpha=0.0, generator=torch.Generator().manual_seed(1), **kw)
    base = torch.optim.SGD(ref.parameters(), **kw)
    for _ in range(3):
        opt.step(_closure(model, x, y))
        base.zero_grad(); _closure(ref, x, y)(); base.step()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("choice", ["last-linear", "all-analog"])
def test_perturbation_is_the_projection_of_g_on_the_draw(choice):
    model, x, y, targets, tp = _setup(choice)
    sampler, alpha = GaussianSampler(targets.n), 250.0
    opt = DAT(model.parameters(), torch.optim.SGD, targets=targets, sampler=sampler, target_params=tp,
              alpha=alpha, generator=torch.Generator().manual_seed(7), lr=0.1)
    _closure(model, x, y)()
    w = {n: p.detach().clone() for n, p in tp.items()}
    g = torch.cat([tp[n].grad.flatten() for n in tp])            # g restricted to the targets
    opt.first_step()
    # Reference: the same draw, the weight perturbation delta = w_scale * eta per layer, and the
    # projection formula on the flat vectors.
    eta = sampler.sample(1, torch.Generator().manual_seed(7))[0].double()
    deltas = targets.eta_to_deltas(eta, w)
    for layer in targets.layers:                                    # w_scale = max|W| (relative units)
        rows = deltas[layer.name].reshape(layer.cols, -1)
        assert torch.allclose(deltas[layer.name].abs().max() / w[layer.name].abs().max(),
                              eta[layer.offset:layer.offset + layer.size].abs().max())
        assert rows.shape == (layer.cols, layer.rows)
    d = torch.cat([deltas[n].flatten() for n in tp])
    eps = (g @ d) / (d @ d) * d
    moved = torch.cat([(tp[n].detach() - w[n]).flatten() for n in tp])
    assert torch.allclose(moved, alpha * eps, rtol=1e-10, atol=1e-14)
    # eps is a projection: applying it twice changes nothing, and g - eps is orthogonal to delta.
    assert abs(float((g - eps) @ d)) < 1e-10 * float(g.norm() * d.norm())


def test_p_perturbations_are_averaged_and_the_step_starts_from_w():
    model, x, y, targets, tp = _setup("last-linear")
    model.eval()
    sampler, alpha, lr, p = GaussianSampler(targets.n), 100.0, 0.1, 3
    ref = copy.deepcopy(model)
    opt = DAT(model.parameters(), torch.optim.SGD, targets=targets, sampler=sampler, target_params=tp,
              alpha=alpha, p=p, generator=torch.Generator().manual_seed(3), lr=lr)
    opt.step(_closure(model, x, y))
    # Reference: Algorithm 1 written out with plain tensors.
    params = dict(ref.named_parameters())
    loss = F.cross_entropy(ref(x), y)
    g = torch.autograd.grad(loss, [params[n] for n in tp])
    etas = sampler.sample(p, torch.Generator().manual_seed(3)).double()
    w0 = {n: q.detach().clone() for n, q in params.items()}
    grads = []
    for eta in etas:
        deltas = targets.eta_to_deltas(eta, {n: w0[n] for n in tp})
        d = torch.cat([deltas[n].flatten() for n in tp])
        gd = torch.cat([gi.flatten() for gi in g])
        with torch.no_grad():
            for n in tp:
                params[n].copy_(w0[n] + alpha * (gd @ d) / (d @ d) * deltas[n])
        ref.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        grads.append({n: q.grad.clone() for n, q in params.items()})
    expected = {n: w0[n] - lr * sum(gr[n] for gr in grads) / p for n in params}
    for n, q in model.named_parameters():
        assert torch.allclose(q, expected[n], rtol=1e-12, atol=1e-14), n


def test_sam_perturbation_is_rho_g_over_norm_g():
    model, x, y, targets, tp = _setup("all-analog")
    opt = SAM(model.parameters(), torch.optim.SGD, target_params=tp, rho=0.05, lr=0.1)
    _closure(model, x, y)()
    w = {n: p.detach().clone() for n, p in tp.items()}
    g = torch.cat([tp[n].grad.flatten() for n in tp])
    opt.first_step()
    moved = torch.cat([(tp[n].detach() - w[n]).flatten() for n in tp])
    assert torch.allclose(moved, 0.05 * g / g.norm(), rtol=1e-9)
    assert abs(float(moved.norm()) - 0.05) < 1e-9


def test_noise_injection_moves_by_the_draw_without_projection():
    model, x, y, targets, tp = _setup("last-linear")
    sampler = GaussianSampler(targets.n)
    opt = NoiseInjection(model.parameters(), torch.optim.SGD, targets=targets, sampler=sampler,
                         target_params=tp, generator=torch.Generator().manual_seed(5), lr=0.1)
    w = {n: p.detach().clone() for n, p in tp.items()}
    opt.first_step()  # no gradient needed
    eta = sampler.sample(1, torch.Generator().manual_seed(5))[0].double()
    deltas = targets.eta_to_deltas(eta, w)
    for n in tp:
        assert torch.allclose(tp[n].detach() - w[n], deltas[n], rtol=1e-12, atol=1e-15)


def test_scheduler_and_state_dict_act_on_the_shared_groups():
    model, x, y, targets, tp = _setup("last-linear")
    opt = DAT(model.parameters(), torch.optim.SGD, targets=targets, sampler=GaussianSampler(targets.n),
              target_params=tp, alpha=10.0, lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt.base_optimizer, step_size=1, gamma=0.5)
    opt.step(_closure(model, x, y)); sched.step()
    assert opt.param_groups[0]["lr"] == opt.base_optimizer.param_groups[0]["lr"] == 0.05
    state = opt.state_dict()
    opt.load_state_dict(state)
    assert opt.base_optimizer.param_groups is opt.param_groups


class AlphaSchedule:
    """A scheduler of DAT's strength, as torch's schedulers change "lr": it writes each param
    group's "alpha" (the groups a resume restores and a StepLR steps)."""

    def __init__(self, optimizer, values):
        self.optimizer, self.values = optimizer, list(values)

    def step(self, i):
        for group in self.optimizer.param_groups:
            group["alpha"] = self.values[i]


def test_a_scheduler_that_changes_alpha_in_the_groups_is_honoured():
    """The perturbation of each step is alpha_t * eps with the alpha the schedule set for that step
    (the reference: the projection formula by hand), also after a load_state_dict, and p likewise."""
    model, x, y, targets, tp = _setup("all-analog")
    sampler = GaussianSampler(targets.n)
    opt = DAT(model.parameters(), torch.optim.SGD, targets=targets, sampler=sampler, target_params=tp,
              alpha=1.0, generator=torch.Generator().manual_seed(3), lr=0.1)
    schedule = AlphaSchedule(opt.base_optimizer, [40.0, 0.0, 250.0])
    reference_gen = torch.Generator().manual_seed(3)
    for i, alpha in enumerate(schedule.values):
        schedule.step(i)
        if i == 2:  # a resume's load_state_dict keeps the scheduled value
            opt.base_optimizer.load_state_dict(opt.base_optimizer.state_dict())
        assert opt.alpha == alpha
        opt.zero_grad()
        _closure(model, x, y)()
        w = {n: q.detach().clone() for n, q in tp.items()}
        g = torch.cat([tp[n].grad.flatten() for n in tp])
        opt.first_step()
        d = torch.cat([t.flatten() for t in targets.eta_to_deltas(
            sampler.sample(1, reference_gen)[0].double(), w).values()])
        moved = torch.cat([(tp[n].detach() - w[n]).flatten() for n in tp])
        assert torch.allclose(moved, alpha * (g @ d) / (d @ d) * d, rtol=1e-10, atol=1e-14), i
        opt.second_step(zero_grad=True)
    for group in opt.base_optimizer.param_groups:
        group["p"] = 3
    assert opt.p == 3 and opt.step(_closure(model, x, y)) is not None
    opt.base_optimizer.param_groups[0]["alpha"] = 5.0  # one strength per step: disagreeing groups are refused
    opt.base_optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))],
                                        "alpha": 6.0})
    with pytest.raises(ValueError, match="alpha"):
        opt.alpha


@pytest.mark.parametrize("kwargs, match", [(dict(alpha=-1.0), "alpha"), (dict(alpha="big"), "alpha"),
                                           (dict(p=0), "p"), (dict(target_params={}), "target_params")])
def test_invalid_arguments_are_refused(kwargs, match):
    model, x, y, targets, tp = _setup("last-linear")
    args = dict(targets=targets, sampler=GaussianSampler(targets.n), target_params=tp, alpha=1.0, lr=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DAT(model.parameters(), torch.optim.SGD, **args)
    with pytest.raises(ValueError, match="rho"):
        SAM(model.parameters(), torch.optim.SGD, target_params=tp, rho=-0.1, lr=0.1)
