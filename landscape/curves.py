"""1D noise-direction curves (paper section III.C, Fig. 2): g(alpha) along unit device-noise
directions, per model, device and draw.

A pure function: models, profiles and data in, a ``Curves`` result carrying its metadata out. The
definitions are those of DESIGN.md "Landscapes"; docs/landscape.md states every default.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from dat.errors import expected

from . import cache as _cache
from .directions import check_same_architecture, noise_directions, target_weights, typical_noise_norm
from .evaluator import DEFAULT_MEMORY_BUDGET, Evaluator, check_memory_budget
from .inputs import (MAX_EVALUATIONS, Progress, as_tensors, check_evaluations, check_profile, draw_eta,
                     profile_hash, resolve_targets, result_meta)
from .results import BANDS, Curves
from .defaults import CURVE_DRAWS, CURVE_POINTS, CURVE_SPAN


def default_alphas(norms, span: float = CURVE_SPAN, num: int = CURVE_POINTS) -> np.ndarray:
    """alpha in [-span * r, span * r] with r the largest typical noise norm among the models, so one
    grid serves every model and alpha = +-r (where the device puts the weights) is well inside."""
    r = float(np.max(norms))
    if not np.isfinite(r) or r <= 0:
        raise ValueError(f"typical noise norm must be positive and finite, found {r}")
    if not (np.isfinite(span) and span > 0):
        raise expected("span", "a positive number (the alpha grid is [-span r, span r])", span)
    if num < 3:
        raise expected("num_alphas", "an integer >= 3", num)
    return np.linspace(-span * r, span * r, int(num))


def noise_curves(models: Mapping[str, nn.Module], profiles: Mapping[str, object], dataset, *,
                 alphas=None, span: float = CURVE_SPAN, num_alphas: int = CURVE_POINTS, draws: int = CURVE_DRAWS, seed: int = 0,
                 band: str = "std", split: str = "train", max_samples: int | None = None, targets=None,
                 sampler: str = "full", k: int = 10, batch_size: int | None = None, chunk_size: int | None = None,
                 strategy: str = "auto", memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 max_evaluations: int | None = MAX_EVALUATIONS, progress: Progress | None = None,
                 cache=None) -> Curves:
    """g(alpha) = mean loss of f(w + alpha d), d = delta / ||delta||_F, delta = w_scale * eta.

    models: label -> model (one architecture, so one set of targets); profiles: label -> NoiseProfile
    bound to those targets. ``alphas``: a shared grid (array) or None for the default of
    ``default_alphas`` per device. ``draws`` directions per device, seeded by ``seed``.
    ``cache``: a ResultCache, a folder, or None (no cache). ``batch_size`` (samples per forward pass,
    None: from the budget), ``chunk_size`` (points per vmap call), ``strategy`` and ``memory_budget``
    (bytes) change the speed and memory only; ``max_evaluations`` refuses larger jobs (None: no limit).
    """
    if not models or not profiles:
        raise ValueError(f"need at least one model and one profile, found {len(models)} and {len(profiles)}")
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, found {band!r}")
    if isinstance(draws, bool) or int(draws) != draws or int(draws) < 1:
        raise expected("draws", "an integer >= 1 (noise directions per device)", draws)
    if alphas is None:
        if not (np.isfinite(span) and span > 0):
            raise expected("span", "a positive number (the alpha grid is [-span r, span r])", span)
        if int(num_alphas) < 3:
            raise expected("num_alphas", "an integer >= 3", num_alphas)
    num_a = int(num_alphas) if alphas is None else int(np.size(alphas))
    check_evaluations(len(models) * len(profiles) * int(draws) * (num_a + 2),
                      f"these curves ({len(models)} models x {len(profiles)} devices x {int(draws)} draws x "
                      f"({num_a} alphas + 2))", max_evaluations)
    check_memory_budget(memory_budget)
    started = time.perf_counter()
    check_same_architecture(dict(models))
    first = next(iter(models.values()))
    targets = resolve_targets(first, targets, profiles.values())
    for label, p in profiles.items():
        check_profile(label, p, targets)
    X, Y = as_tensors(dataset, max_samples)
    m_labels, d_labels = tuple(models), tuple(profiles)
    weights = {m: target_weights(models[m], targets) for m in m_labels}
    norms = np.array([[typical_noise_norm(profiles[d], targets, weights[m]) for d in d_labels] for m in m_labels])
    if alphas is None:
        grid = np.stack([default_alphas(norms[:, j], span, num_alphas) for j in range(len(d_labels))])
    else:
        a = np.asarray(alphas, dtype=np.float64)
        if a.ndim != 1 or a.size < 2 or not np.all(np.isfinite(a)):
            raise ValueError(f"alphas must be a finite 1D array of >= 2 values, found shape {a.shape}")
        grid = np.stack([a] * len(d_labels))
    inputs = {
        "models": {m: _cache.state_hash(models[m]) for m in m_labels},
        "profiles": {d: {"name": getattr(profiles[d], "name", d), "hash": profile_hash(profiles[d])} for d in d_labels},
        "data": {"split": split, "n": int(Y.shape[0]), "hash": _cache.tensor_hash({"X": X, "Y": Y})},
        # Orders matter (array axes) but JSON keys are hashed sorted: keep them as lists.
        "model_order": list(m_labels), "device_order": list(d_labels),
        "targets": targets.describe(), "alphas": grid.tolist(), "draws": int(draws), "seed": int(seed),
        "sampler": sampler, "k": int(k), "band": band, "span": span, "num_alphas": int(num_alphas),
    }
    store = _cache.as_cache(cache)
    if store is not None:
        hit = store.load(inputs, Curves)
        if hit is not None:
            return hit

    etas = {d: draw_eta(profiles[d], draws, seed, sampler, k) for d in d_labels}
    M, D, A = len(m_labels), len(d_labels), grid.shape[1]
    loss = np.zeros((M, D, int(draws), A))
    acc = np.zeros_like(loss)
    loss_t = np.zeros((M, D, int(draws)))
    acc_t = np.zeros_like(loss_t)
    clean_l, clean_a = np.zeros(M), np.zeros(M)
    for i, m in enumerate(m_labels):
        ev = Evaluator(models[m], X, Y, batch_size=batch_size, vmap_chunk=chunk_size, strategy=strategy,
                       memory_budget=memory_budget)
        dirs = {d: noise_directions(etas[d], targets, weights[m]) for d in d_labels}
        # alpha = typical norm and alpha = 0 ride along as two extra alphas: exact, not interpolated.
        grids = {d: torch.tensor(np.append(grid[j], [norms[i, j], 0.0])) for j, d in enumerate(d_labels)}
        res = ev.along(dirs, grids)
        for j, d in enumerate(d_labels):
            l, c = (t.numpy() for t in res[d])
            loss[i, j], acc[i, j] = l[:, :-2], c[:, :-2]
            loss_t[i, j], acc_t[i, j] = l[:, -2], c[:, -2]
            clean_l[i], clean_a[i] = l[0, -1], c[0, -1]
            if progress is not None:
                progress(i * D + j + 1, M * D)
    result = Curves(m_labels, d_labels, grid, loss, acc, norms, loss_t, acc_t, clean_l, clean_a, band,
                    result_meta("curves", inputs, started))
    if store is not None:
        store.save(inputs, result)
    return result

