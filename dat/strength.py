"""DAT strength: alpha chosen so that the perturbation has a stated size, the same for every sampler.

DAT's perturbation is alpha * eps_j with ||eps_j|| = |g . delta_j| / ||delta_j||: its size depends
on how a sampler's draws align with the gradient g, so one alpha is a different strength for
DAT-Fast and DAT-Full, and for different devices. A *strength* s fixes instead

    E ||alpha eps|| = s * r,     r = sqrt(E ||delta||^2)   (weight units, on the noise targets)

where r is the device's typical noise norm (delta = w_scale * eta, eta ~ N(mu, Sigma), the whole
device whatever the sampler), at the start of training: alpha = s r / mean ||eps_j||, the mean over
`batches` training batches (seeded) times `draws` draws of the method's own sampler, at the
initial weights. The optimizer keeps alpha as its raw knob; the trainer records both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dat.errors import UserError


@dataclass(frozen=True)
class StrengthCalibration:
    strength: float       # s: target mean ||alpha eps|| / r
    alpha: float          # the alpha it resolved to
    r: float              # sqrt(E ||delta||^2) at the initial weights (weight units)
    mean_eps_norm: float  # mean ||eps|| over the calibration batches and draws (weight units)
    sem_eps_norm: float   # its standard error over those batches x draws
    batches: int
    draws: int
    batch_size: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def typical_noise_norm(profile, targets, weights) -> float:
    """r = sqrt(E ||delta||^2) = sqrt(sum over layers w_scale^2 (||mu_l||^2 + trace Sigma_l))."""
    mu, var = profile.mean(), profile.variance()
    total = 0.0
    for layer in targets.layers:
        part = slice(layer.offset, layer.offset + layer.size)
        scale = float(targets._w_scale(layer, weights))
        total += scale**2 * float((mu[part] ** 2).sum() + var[part].sum())
    return math.sqrt(total)


def calibration_batches(dataset, batches: int, batch_size: int, seed: int):
    """`batches` batches of the dataset, chosen by a generator seeded with `seed` (no other RNG)."""
    n = len(dataset)
    if batches * batch_size > n:
        raise UserError(f"strength calibration: expected at most {n} images ({batches} x {batch_size} asked)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out = []
    for b in range(batches):
        items = [dataset[int(i)] for i in order[b * batch_size:(b + 1) * batch_size]]
        out.append((torch.stack([torch.as_tensor(x) for x, _ in items]), torch.as_tensor([int(y) for _, y in items])))
    return out


def target_gradient(model: nn.Module, targets, x, y) -> dict[str, torch.Tensor]:
    """g = grad L(w) restricted to the targets, in train mode as a training step computes it; the
    BatchNorm running statistics are left as they were."""
    params = dict(model.named_parameters())
    saved = {k: b.clone() for k, b in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        loss = F.cross_entropy(model(x), y)
        names = [layer.name for layer in targets.layers]
        grads = torch.autograd.grad(loss, [params[n] for n in names])
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(saved[k])
        model.train(was_training)
    return {n: g.detach() for n, g in zip(names, grads)}


@torch.no_grad()
def eps_norms(grads, targets, sampler, weights, draws: int, generator: torch.Generator) -> torch.Tensor:
    """||eps_j|| = |g . delta_j| / ||delta_j|| for `draws` draws of the sampler [draws]."""
    first = next(iter(weights.values()))
    etas = sampler.sample(draws, generator).to(dtype=first.dtype, device=first.device)
    deltas = targets.eta_to_deltas(etas, weights)  # {name: [draws, *shape]}
    dot = sum((grads[n][None] * d).flatten(1).sum(1) for n, d in deltas.items())
    norm = torch.sqrt(sum((d**2).flatten(1).sum(1) for d in deltas.values()))
    return torch.where(norm > 0, dot.abs() / norm.clamp(min=1e-30), torch.zeros_like(norm))


def calibrate_alpha(model: nn.Module, targets, sampler, profile, dataset, strength: float, seed: int = 0,
                    batches: int = 4, draws: int = 16, batch_size: int = 64) -> StrengthCalibration:
    """alpha = strength * r / mean ||eps|| at the model's current weights (see module docstring)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength > 0:
        raise UserError(f"strength: expected a positive number, found {strength!r}")
    params = dict(model.named_parameters())
    weights = {layer.name: params[layer.name].detach() for layer in targets.layers}
    r = typical_noise_norm(profile, targets, weights)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    norms = []
    for x, y in calibration_batches(dataset, batches, batch_size, seed):
        grads = target_gradient(model, targets, x.to(device), y.to(device))
        norms.append(eps_norms(grads, targets, sampler, weights, draws, gen).double().cpu())
    norms = torch.cat(norms)
    mean = float(norms.mean())
    if not mean > 0:
        raise UserError("strength calibration: expected a non-zero gradient along the device's draws, found "
                        "mean ||eps|| = 0 (the draws are orthogonal to the gradient)")
    sem = float(norms.std() / math.sqrt(norms.numel())) if norms.numel() > 1 else 0.0
    return StrengthCalibration(float(strength), float(strength) * r / mean, r, mean, sem, batches, draws,
                               batch_size, seed)
