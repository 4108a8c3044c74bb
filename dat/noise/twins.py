"""Correlation ablation: the twins of a noise profile, derived exactly.

For a profile N(mu, Sigma) bound to a model's targets (any kind: crossbar, fitted, dense):
- its *diagonal twin* N(mu, diag(Sigma)): every cell keeps its own variance, all correlation is
  removed (an i.i.d.-per-cell device of the same per-cell noise);
- its *isotropic twin* N(mu, (trace(Sigma) / n) I): the same total variance spread evenly.
Both keep the mean mu, so a comparison full vs twin isolates the covariance's structure.

A twin is a `DenseDevice` of the targets' n (diagonal matrices, exact in float64), so it is bound,
sampled (every sampler), saved (`dat.noise.io.save_device`) and trained with (a saved twin is a
device path for `TrainConfig.device`) like any other device. For a crossbar preset the per-cell
variance is the same in every cell, so its two twins coincide.
"""

from __future__ import annotations

import numpy as np

from dat.errors import expected
from dat.noise.dense import DenseDevice
from dat.noise.io import save_device
from dat.noise.profile import DENSE_LIMIT, NoiseProfile, bind

KINDS = ("diagonal", "isotropic")


def twin_device(profile: NoiseProfile, kind: str, name: str | None = None, max_n: int = DENSE_LIMIT) -> DenseDevice:
    """The ``kind`` twin ("diagonal" or "isotropic") of a bound profile, as a dense device."""
    if not isinstance(profile, NoiseProfile):
        raise expected("profile", "a NoiseProfile (dat.noise.profile.bind(device, targets))", type(profile).__name__)
    if kind not in KINDS:
        raise expected("twin kind", f"one of {KINDS}", repr(kind))
    if profile.n > max_n:
        raise expected(f"profile size for a {kind} twin", f"n <= {max_n} (a dense n x n device)", f"n = {profile.n}")
    mu = profile.mean().numpy().astype(np.float64)
    var = profile.variance().numpy().astype(np.float64)
    if kind == "isotropic":
        var = np.full(profile.n, var.sum() / profile.n)
    return DenseDevice(mu, np.diag(var), name=name or f"{profile.name}-{'diag' if kind == 'diagonal' else 'iso'}")


def twin(profile: NoiseProfile, kind: str, name: str | None = None) -> NoiseProfile:
    """The twin bound to the same targets (usable by every sampler and by training)."""
    device = twin_device(profile, kind, name)
    return bind(device, profile.targets, name=device.name)


def save_twin(path, profile: NoiseProfile, kind: str, name: str | None = None) -> dict:
    """Write the twin as a profile file (a device path for training and evaluation); returns its metadata."""
    device = twin_device(profile, kind, name)
    meta = save_device(path, device, name=device.name, targets=profile.targets)
    return meta
