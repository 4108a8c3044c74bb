"""What 1D curves and 2D surfaces both take in: the data split as tensors, the noise targets and
profiles checked against each other, the seeded noise draws, the evaluation-count limit and the
pieces of a result's cache key and metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from dat.errors import UserError
from dat.noise.targets import find_targets

from . import cache as _cache
from .directions import target_weights

SAMPLERS = ("full", "low-rank")
Progress = Callable[[int, int], None]
# Largest job run without being asked twice, in model evaluations (one evaluation = the loss of one
# weight point, noise draw included, over the data split). The default figures need about 8,000; a
# 61 x 61 three-panel surface at S = 8 about 63,000. ``max_evaluations=None`` (CLI --allow-large)
# lifts it.
MAX_EVALUATIONS = 200_000


def check_evaluations(count: int, what: str, limit: int | None) -> None:
    """UserError when ``count`` model evaluations exceed ``limit`` (None: no limit)."""
    if limit is not None and count > limit:
        raise UserError(f"{what} would take {count:,} model evaluations, more than the limit of {limit:,}: "
                        "choose a coarser grid or fewer draws, or lift the limit (--allow-large on the "
                        "command line, max_evaluations=None in Python) to run it anyway")


def as_tensors(dataset, max_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, Y) from a torch Dataset or an (X, Y) pair; the first ``max_samples`` samples if given."""
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2 and all(isinstance(t, torch.Tensor) for t in dataset):
        X, Y = dataset
    elif isinstance(dataset, torch.utils.data.TensorDataset):
        X, Y = dataset.tensors[0], dataset.tensors[1]
    elif isinstance(dataset, torch.utils.data.Dataset):
        n = len(dataset)
        if max_samples is not None:
            n = min(n, int(max_samples))
        items = [dataset[i] for i in range(n)]
        X = torch.stack([torch.as_tensor(x) for x, _ in items])
        Y = torch.as_tensor([int(y) for _, y in items])
    else:
        raise TypeError(f"dataset must be a torch Dataset or an (X, Y) pair of tensors, found {type(dataset).__name__}")
    if X.shape[0] != Y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"dataset must have as many labels as inputs (> 0), found X {tuple(X.shape)}, Y {tuple(Y.shape)}")
    if max_samples is not None:
        if int(max_samples) < 1:
            raise ValueError(f"max_samples must be >= 1, found {max_samples}")
        X, Y = X[: int(max_samples)], Y[: int(max_samples)]
    return X.float().contiguous(), Y.long().contiguous()


def resolve_targets(model: nn.Module, targets, profiles=()):
    """The given targets, else those the profiles are bound to, else the model's last Linear."""
    if targets is None:
        bound = [getattr(p, "targets", None) for p in profiles if p is not None]
        targets = bound[0] if bound and bound[0] is not None else None
    if targets is None:
        targets = find_targets(model)
    target_weights(model, targets)  # ValueError naming a target the model does not have
    return targets


def check_profile(label: str, profile, targets) -> None:
    if not callable(getattr(profile, "sampler", None)):
        raise TypeError(f"profile {label!r} must be a NoiseProfile (with .sampler), found {type(profile).__name__}")
    if int(profile.n) != int(targets.n):
        raise ValueError(f"profile {label!r} has n = {profile.n} noise values but the targets have n = {targets.n}: "
                         "bind the device to these models' targets")


def draw_eta(profile, draws: int, seed: int, sampler: str = "full", k: int = 10) -> torch.Tensor:
    """[draws, n] draws of eta. A fresh generator seeded with ``seed`` per profile, so the draws do
    not depend on the order of devices and are shared (common random numbers) by all models and
    grid points: differences between them are not sampling noise."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, found {sampler!r}")
    if int(draws) < 1:
        raise ValueError(f"draws must be >= 1, found {draws}")
    gen = torch.Generator().manual_seed(int(seed))
    return profile.sampler(sampler, k=k).sample(int(draws), gen).float()


def profile_hash(profile) -> str:
    h = getattr(profile, "content_hash", None)
    return h() if callable(h) else _cache.tensor_hash({"mean": profile.mean(), "variance": profile.variance()})


def result_meta(kind: str, inputs: dict, started: float) -> dict:
    return {"kind": kind, "inputs": inputs, "versions": _cache.versions(),
            "seconds": round(time.perf_counter() - started, 3)}

