"""Directions in weight space: device noise directions, the paper's (u, v) plane, random planes.

Every model here is read, never written: directions and planes are dictionaries of tensors keyed
by the names of ``model.state_dict()``, and evaluation elsewhere uses ``torch.func.functional_call``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from dat.trio import LABELS, MARKERS



def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of every parameter and buffer, keyed as in ``model.state_dict()``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, found {type(model).__name__}")
    return {name: t.detach().clone() for name, t in model.state_dict(keep_vars=False).items()}


def check_same_architecture(models: dict[str, nn.Module]) -> None:
    """Raise ValueError naming the first tensor whose name, shape or dtype differs between models."""
    items = list(models.items())
    if not items:
        raise ValueError("expected at least one model, found none")
    ref_label, ref = items[0]
    ref_state = ref.state_dict()
    for label, model in items[1:]:
        state = model.state_dict()
        missing = sorted(set(ref_state) - set(state))
        extra = sorted(set(state) - set(ref_state))
        if missing or extra:
            name = (missing or extra)[0]
            raise ValueError(
                f"models {ref_label!r} and {label!r} must share an architecture: tensor {name!r} is in "
                f"{ref_label if missing else label!r} only (missing in {label!r}: {missing[:5]}, "
                f"extra in {label!r}: {extra[:5]})")
        for name, t in ref_state.items():
            u = state[name]
            if tuple(t.shape) != tuple(u.shape) or t.dtype != u.dtype:
                raise ValueError(
                    f"models {ref_label!r} and {label!r} must share an architecture: tensor {name!r} is "
                    f"{tuple(t.shape)} {t.dtype} in {ref_label!r} but {tuple(u.shape)} {u.dtype} in {label!r}")


VAR_FLOOR = 1e-12  # smallest running variance taken into log space


@dataclass
class Plane:
    """A plane of weights: point(alpha, beta) = sum_k c_k(alpha, beta) * anchors[k].

    ``kind="trio"`` (paper Fig. 1): anchors (w_SGD, w_DAT-A, w_DAT-B) with the barycentric
    coefficients (1 - alpha - beta, alpha - beta, 2 beta). Expanding them gives exactly
    w_SGD + alpha u + beta v with u = w_A - w_SGD and v = 2 w_B - w_A - w_SGD, and at the markers
    (0, 0), (1, 0), (0.5, 0.5) the coefficients are exact zeros and ones, so the three models are
    reproduced bit for bit (w + 1 * (w_A - w) would be off by rounding).
    ``kind="free"``: anchors (w, d1, d2) with coefficients (1, alpha, beta).

    Floating-point tensors (weights and BatchNorm running means) move along the plane; integer
    buffers (BatchNorm's batch counter) are taken from the first anchor. On the trio plane BatchNorm
    running variances move geometrically: log var = sum_k c_k log var_k. That is still exact at the
    three models, and stays positive where the plane extrapolates: moved linearly, variances go
    below zero just outside the models' triangle (the demo trio gave losses of 1e9 to 1e13 there).
    On a free plane the directions are not models, so variances move linearly, clamped at 0.
    """

    kind: str
    anchors: dict[str, torch.Tensor]            # name -> [K, *shape] (floating tensors only)
    fixed: dict[str, torch.Tensor]              # name -> tensor (integer buffers)
    markers: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in ("trio", "free"):
            raise ValueError(f"plane kind must be 'trio' or 'free', found {self.kind!r}")

    def coefficients(self, coords: torch.Tensor) -> torch.Tensor:
        """[C, 2] (alpha, beta) -> [C, 3] anchor coefficients."""
        coords = torch.as_tensor(coords, dtype=torch.float64)
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise ValueError(f"coords must have shape [C, 2], found {tuple(coords.shape)}")
        a, b = coords[:, 0], coords[:, 1]
        if self.kind == "trio":
            return torch.stack([1.0 - a - b, a - b, 2.0 * b], dim=1)
        return torch.stack([torch.ones_like(a), a, b], dim=1)

    def points(self, coords: torch.Tensor) -> dict[str, torch.Tensor]:
        """The full state (parameters and buffers) at each of C points: name -> [C, *shape]."""
        coef = self.coefficients(coords)
        out = {}
        for name, stack in self.anchors.items():
            c = coef.to(device=stack.device, dtype=stack.dtype)
            if name.endswith("running_var") and self.kind == "trio":
                # Geometric path: positive everywhere, and exact at the markers (coefficients 0 and 1).
                # The floor only guards log(0) for a channel whose variance collapsed to zero.
                geo = torch.einsum("ck,k...->c...", c, stack.clamp_min(VAR_FLOOR).log()).exp()
                # At a marker (one-hot coefficients) take the anchor itself: exp(log v) is not bit exact.
                at_model = ((c == 0) | (c == 1)).all(1) & (c.sum(1) == 1)
                lin = torch.einsum("ck,k...->c...", c, stack)
                out[name] = torch.where(at_model.view(-1, *[1] * (geo.ndim - 1)), lin, geo)
                continue
            out[name] = torch.einsum("ck,k...->c...", c, stack)
            if name.endswith("running_var"):
                # A free plane's extrapolation can make a variance negative; clamp it to 0
                # (BatchNorm's eps keeps the normalisation finite) instead of producing NaN.
                out[name] = out[name].clamp_min(0.0)
        n = coef.shape[0]
        for name, t in self.fixed.items():
            out[name] = t.unsqueeze(0).expand(n, *t.shape)
        return out


def _split_state(states: list[dict[str, torch.Tensor]]):
    anchors, fixed = {}, {}
    for name, t in states[0].items():
        if t.is_floating_point():
            anchors[name] = torch.stack([s[name] for s in states])
        else:
            fixed[name] = t
    return anchors, fixed


def trio_plane(sgd: nn.Module, dat_a: nn.Module, dat_b: nn.Module) -> Plane:
    """The paper's plane through w_SGD, w_DAT-A and w_DAT-B (markers at (0,0), (1,0), (0.5,0.5))."""
    check_same_architecture(dict(zip(LABELS, (sgd, dat_a, dat_b))))
    anchors, fixed = _split_state([state_tensors(m) for m in (sgd, dat_a, dat_b)])
    return Plane("trio", anchors, fixed, dict(MARKERS))


def filter_normalized_direction(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A Gaussian direction rescaled filter by filter to the model's own filter norms (Li et al. 2018).

    For every weight with an output dimension (Linear rows, Conv filters) each slice d_i is scaled to
    ||w_i|| / ||d_i||, so the direction has the model's scale everywhere and plots of different
    networks are comparable. Biases, BatchNorm parameters and buffers get zero, as in Li et al.'s
    default: they are few and their scale is not that of a filter.
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, found {type(generator).__name__}")
    params = {name for name, _ in model.named_parameters()}
    out = {}
    for name, w in state_tensors(model).items():
        if not w.is_floating_point():
            continue
        if name not in params or w.ndim < 2:
            out[name] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=generator, dtype=w.dtype)
        w_norm = w.reshape(w.shape[0], -1).norm(dim=1)
        d_norm = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(torch.finfo(w.dtype).tiny)
        out[name] = d * (w_norm / d_norm).reshape(-1, *([1] * (w.ndim - 1)))
    return out


def random_plane(model: nn.Module, generator: torch.Generator) -> Plane:
    """A free plane through one model along two filter-normalised random directions."""
    state = state_tensors(model)
    d1 = filter_normalized_direction(model, generator)
    d2 = filter_normalized_direction(model, generator)
    anchors, fixed = _split_state([state, d1, d2])
    return Plane("free", anchors, fixed, {"model": (0.0, 0.0)})


def target_weights(model_or_state, targets) -> dict[str, torch.Tensor]:
    """The current weights of the noise targets, as ``Targets.eta_to_deltas`` expects them."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    missing = [layer.name for layer in targets.layers if layer.name not in state]
    if missing:
        raise ValueError(f"model has no target weight(s) {missing}; found {sorted(state)[:8]}...")
    return {layer.name: state[layer.name].detach() for layer in targets.layers}


def noise_directions(eta: torch.Tensor, targets, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unit directions d_s = delta_s / ||delta_s||_F, delta_s = w_scale * eta_s (paper III.C, 1D plot).

    eta: [S, n] draws from a profile. The Frobenius norm runs over all target layers together, so
    with several layers d_s is one unit vector in the joint target subspace.
    """
    deltas = targets.eta_to_deltas(eta.to(next(iter(weights.values())).device), weights)
    sq = sum(d.reshape(d.shape[0], -1).pow(2).sum(1) for d in deltas.values())
    norm = sq.sqrt()
    if bool((norm == 0).any()):
        raise ValueError("a noise draw is exactly zero: its direction d = delta / ||delta|| is undefined")
    return {name: d / norm.reshape(-1, *([1] * (d.ndim - 1))) for name, d in deltas.items()}


def typical_noise_norm(profile, targets, weights: dict[str, torch.Tensor]) -> float:
    """sqrt(E ||delta||_F^2) for delta = w_scale * eta, eta ~ N(mu, Sigma).

    E ||delta||^2 = sum_i s_i^2 (Sigma_ii + mu_i^2), with s_i the w_scale of the layer holding
    eta_i. ``eta_to_deltas`` places one eta entry on one weight and multiplies by s, so applying it
    to (var + mu^2) and to ones gives s (var + mu^2) and s elementwise: their product summed is exact.
    This is the device's own noise norm on this model: alpha = this value is where the device puts it.
    """
    mu = profile.mean().to(torch.float64)
    var = profile.variance().to(torch.float64)
    w64 = {k: v.detach().cpu().to(torch.float64) for k, v in weights.items()}
    second = targets.eta_to_deltas(var + mu * mu, w64)
    scale = targets.eta_to_deltas(torch.ones_like(mu), w64)
    return float(sum((second[k] * scale[k]).sum() for k in second).sqrt())
