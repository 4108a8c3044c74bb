"""1D noise-direction curves and 2D (alpha, beta) surfaces (paper section III.C, Figs. 1 and 2).

Pure functions: models, profiles and data in, a result object carrying its metadata out. The
definitions are those of DESIGN.md "Landscapes"; docs/landscape.md states every default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dat.errors import UserError, expected
from dat.parallel import rank_and_world

from . import cache as _cache
from .directions import (Plane, check_same_architecture, noise_directions, random_plane, target_weights,
                         trio_plane, typical_noise_norm)
from .evaluator import DEFAULT_MEMORY_BUDGET, Evaluator, check_memory_budget
from .parallel import map_chunks

BANDS = ("std", "p10-p90")
BN_MODES = ("interpolate", "recalibrate")
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


# ----------------------------------------------------------------------------------------------
# Result objects
# ----------------------------------------------------------------------------------------------
def _band(values: np.ndarray, band: str, axis: int):
    if band == "std":
        mean = values.mean(axis)
        std = values.std(axis, ddof=1) if values.shape[axis] > 1 else np.zeros_like(mean)
        return mean - std, mean + std
    return np.percentile(values, 10, axis=axis), np.percentile(values, 90, axis=axis)


def _check_axes(array: np.ndarray, lengths: tuple, what: str) -> None:
    """Labels and arrays read back together must agree on every labelled axis's length."""
    if tuple(array.shape[: len(lengths)]) != tuple(lengths):
        raise ValueError(f"{what}: expected leading axes {tuple(lengths)} from its labels, found {array.shape}")


@dataclass(frozen=True)
class Curves:
    """g(alpha) along unit noise directions, per model, device and draw.

    ``alphas[d]`` is device d's alpha grid (the perturbation's Frobenius norm, weight units);
    ``loss`` / ``accuracy`` are [model, device, draw, alpha]; ``typical_norm`` [model, device] is
    sqrt(E||delta||^2) of the device on that model, and ``loss_at_typical`` [model, device, draw] the
    loss at alpha = typical_norm along each draw's own direction (that draw's physical size);
    ``clean_loss`` / ``clean_accuracy`` [model] are the values at alpha = 0.
    """

    models: tuple[str, ...]
    devices: tuple[str, ...]
    alphas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    typical_norm: np.ndarray
    loss_at_typical: np.ndarray
    accuracy_at_typical: np.ndarray
    clean_loss: np.ndarray
    clean_accuracy: np.ndarray
    band: str = "std"
    meta: dict = field(default_factory=dict)

    kind = "curves"

    def mean(self, metric: str = "loss") -> np.ndarray:
        return self._metric(metric).mean(axis=2)

    def band_limits(self, metric: str = "loss") -> tuple[np.ndarray, np.ndarray]:
        return _band(self._metric(metric), self.band, axis=2)

    def _metric(self, metric: str) -> np.ndarray:
        if metric not in ("loss", "accuracy"):
            raise ValueError(f"metric must be 'loss' or 'accuracy', found {metric!r}")
        return self.loss if metric == "loss" else self.accuracy

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"alphas": self.alphas, "loss": self.loss, "accuracy": self.accuracy,
                "typical_norm": self.typical_norm, "loss_at_typical": self.loss_at_typical,
                "accuracy_at_typical": self.accuracy_at_typical, "clean_loss": self.clean_loss,
                "clean_accuracy": self.clean_accuracy}

    def labels(self) -> dict:
        return {"models": list(self.models), "devices": list(self.devices), "band": self.band}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], labels: dict, meta: dict) -> "Curves":
        out = cls(tuple(labels["models"]), tuple(labels["devices"]), band=labels["band"], meta=meta,
                  **{k: np.asarray(arrays[k]) for k in ("alphas", "loss", "accuracy", "typical_norm",
                                                         "loss_at_typical", "accuracy_at_typical", "clean_loss",
                                                         "clean_accuracy")})
        _check_axes(out.loss, (len(out.models), len(out.devices)), "curves loss")
        _check_axes(out.typical_norm, (len(out.models), len(out.devices)), "curves typical_norm")
        return out


@dataclass(frozen=True)
class Surface:
    """g(alpha, beta) on a plane, one panel per noise condition.

    ``loss`` / ``accuracy`` / ``loss_std`` are [panel, alpha, beta]: the expected value over the
    panel's draws (a single evaluation for the noise-free panel, whose std is 0).
    ``marker_loss`` / ``marker_accuracy`` are [panel, marker], evaluated exactly at the markers.
    ``accuracy_std`` [panel, alpha, beta] and ``marker_loss_std`` / ``marker_accuracy_std`` [panel,
    marker] are the std over the same draws (0 for the noise-free panel; None in results saved
    before they were kept), so every Monte-Carlo number has its standard error std / sqrt(draws).
    """

    alphas: np.ndarray
    betas: np.ndarray
    panels: tuple[str, ...]
    loss: np.ndarray
    accuracy: np.ndarray
    loss_std: np.ndarray
    markers: dict
    marker_loss: np.ndarray
    marker_accuracy: np.ndarray
    meta: dict = field(default_factory=dict)
    accuracy_std: np.ndarray | None = None
    marker_loss_std: np.ndarray | None = None
    marker_accuracy_std: np.ndarray | None = None

    kind = "surface"
    SPREADS = ("accuracy_std", "marker_loss_std", "marker_accuracy_std")

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"alphas": self.alphas, "betas": self.betas, "loss": self.loss, "accuracy": self.accuracy,
                "loss_std": self.loss_std, "marker_loss": self.marker_loss,
                "marker_accuracy": self.marker_accuracy,
                **{k: getattr(self, k) for k in self.SPREADS if getattr(self, k) is not None}}

    def labels(self) -> dict:
        # Markers as a list of [name, alpha, beta] rows, not a mapping: the row order is the order of
        # marker_loss's axis, and a list keeps it whatever a JSON writer does with keys.
        return {"panels": list(self.panels),
                "markers": [[k, float(v[0]), float(v[1])] for k, v in self.markers.items()]}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], labels: dict, meta: dict) -> "Surface":
        rows = labels["markers"]
        if not isinstance(rows, list):
            raise ValueError(f"surface markers must be a list of [name, alpha, beta] rows, found {type(rows).__name__}")
        out = cls(panels=tuple(labels["panels"]), markers={str(n): (float(a), float(b)) for n, a, b in rows},
                  meta=meta, **{k: np.asarray(arrays[k]) for k in ("alphas", "betas", "loss", "accuracy", "loss_std",
                                                                    "marker_loss", "marker_accuracy")},
                  **{k: np.asarray(arrays[k]) for k in cls.SPREADS if k in arrays})
        _check_axes(out.loss, (len(out.panels), len(out.alphas), len(out.betas)), "surface loss")
        _check_axes(out.marker_loss, (len(out.panels), len(out.markers)), "surface marker_loss")
        return out


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------
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


def _resolve_targets(model: nn.Module, targets, profiles=()):
    """The given targets, else those the profiles are bound to, else the model's last Linear."""
    if targets is None:
        bound = [getattr(p, "targets", None) for p in profiles if p is not None]
        targets = bound[0] if bound and bound[0] is not None else None
    if targets is None:
        from dat.noise.targets import find_targets

        targets = find_targets(model)
    target_weights(model, targets)  # ValueError naming a target the model does not have
    return targets


def _check_profile(label: str, profile, targets) -> None:
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


def _profile_hash(profile) -> str:
    h = getattr(profile, "content_hash", None)
    return h() if callable(h) else _cache.tensor_hash({"mean": profile.mean(), "variance": profile.variance()})


def _meta(kind: str, inputs: dict, started: float) -> dict:
    return {"kind": kind, "inputs": inputs, "versions": _cache.versions(),
            "seconds": round(time.perf_counter() - started, 3)}


# ----------------------------------------------------------------------------------------------
# 1D curves
# ----------------------------------------------------------------------------------------------
def default_alphas(norms, span: float = 3.0, num: int = 61) -> np.ndarray:
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
                 alphas=None, span: float = 3.0, num_alphas: int = 61, draws: int = 20, seed: int = 0,
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
    targets = _resolve_targets(first, targets, profiles.values())
    for label, p in profiles.items():
        _check_profile(label, p, targets)
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
        "profiles": {d: {"name": getattr(profiles[d], "name", d), "hash": _profile_hash(profiles[d])} for d in d_labels},
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
                    _meta("curves", inputs, started))
    if store is not None:
        store.save(inputs, result)
    return result


# ----------------------------------------------------------------------------------------------
# 2D surfaces
# ----------------------------------------------------------------------------------------------
def _axis(rng, num: int, what: str) -> np.ndarray:
    lo, hi = (float(v) for v in rng)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise expected(what, "(low, high) with low < high", tuple(rng))
    return np.linspace(lo, hi, int(num))


def _resolution(resolution) -> tuple[int, int]:
    res = (resolution, resolution) if np.isscalar(resolution) else tuple(resolution)
    if (len(res) != 2 or any(isinstance(r, bool) or not float(r).is_integer() or int(r) < 2 for r in res)):
        raise expected("resolution", "grid points along alpha and beta, two integers >= 2", resolution)
    return int(res[0]), int(res[1])


class GridChunks(Sequence):
    """The plane's points (the grid in row-major (alpha, beta) order, then the markers) in chunks of
    ``size``, each made when asked for: memory does not grow with the grid."""

    def __init__(self, alphas: np.ndarray, betas: np.ndarray, marks: np.ndarray, size: int):
        self.alphas, self.betas, self.marks, self.size = alphas, betas, marks, int(size)
        self.num_grid = len(alphas) * len(betas)
        self.total = self.num_grid + len(marks)

    def __len__(self) -> int:
        return -(-self.total // self.size)

    def __getitem__(self, j: int) -> np.ndarray:
        if not 0 <= j < len(self):
            raise IndexError(j)
        idx = np.arange(j * self.size, min((j + 1) * self.size, self.total))
        out = np.empty((len(idx), 2))
        on_grid = idx < self.num_grid
        g = idx[on_grid]
        out[on_grid, 0] = self.alphas[g // len(self.betas)]
        out[on_grid, 1] = self.betas[g % len(self.betas)]
        out[~on_grid] = self.marks[idx[~on_grid] - self.num_grid]
        return out


@dataclass
class SurfaceJob:
    """Everything needed to evaluate any chunk of plane points; ``evaluate_chunk`` is the unit of work
    that can be spread over processes (each rank takes its own chunks of ``coords``)."""

    evaluator: Evaluator
    plane: Plane
    panels: tuple[str, ...]
    etas: dict                       # panel -> eta [S, n] or None (noise-free panel)
    targets: object
    bn: str = "interpolate"
    recal_X: torch.Tensor | None = None
    recal_batches: int | None = None


@torch.no_grad()
def evaluate_chunk(job: SurfaceJob, coords) -> dict[str, np.ndarray]:
    """Loss mean / std and accuracy [panel, C] at C (alpha, beta) points of the job's plane."""
    coords = torch.as_tensor(np.asarray(coords, dtype=np.float64))
    points = job.plane.points(coords)
    if job.bn == "recalibrate":
        points = job.evaluator.recalibrate(points, job.recal_X, job.recal_batches)
    C = coords.shape[0]
    blocks, slices, start = [], {}, 0
    names = [layer.name for layer in job.targets.layers] if job.targets is not None else []
    for panel in job.panels:
        eta = job.etas[panel]
        if eta is None:
            blocks.append({n: torch.zeros(C, 1, *points[n].shape[1:], dtype=points[n].dtype, device=points[n].device)
                           for n in names})
            size = 1
        else:
            # delta = w_scale * eta with w_scale = max|W| at each grid point (the moment of use):
            # all C points at once, {name: [C, S, *shape]}.
            blocks.append(job.targets.eta_to_deltas(eta, {n: points[n] for n in names}))
            size = eta.shape[0]
        slices[panel] = slice(start, start + size)
        start += size
    deltas = {n: torch.cat([b[n] for b in blocks], dim=1) for n in names} if names else None
    loss, acc = job.evaluator.at_points(points, deltas, num_draws=start)
    loss, acc = loss.numpy(), acc.numpy()
    out = {"loss": [], "loss_std": [], "accuracy": [], "accuracy_std": []}
    for panel in job.panels:
        l, a = loss[:, slices[panel]], acc[:, slices[panel]]
        out["loss"].append(l.mean(1))
        out["loss_std"].append(l.std(1, ddof=1) if l.shape[1] > 1 else np.zeros(C))
        out["accuracy"].append(a.mean(1))
        out["accuracy_std"].append(a.std(1, ddof=1) if a.shape[1] > 1 else np.zeros(C))
    return {k: np.stack(v) for k, v in out.items()}


def surface_on_plane(plane: Plane, model: nn.Module, dataset, *, profiles: Mapping[str, object] | None = None,
                     alpha_range=(-0.5, 1.5), beta_range=(-0.3, 0.8), resolution=21, draws: int = 8,
                     seed: int = 0, bn: str = "interpolate", recal_dataset=None, recal_batches: int | None = None,
                     split: str = "train", max_samples: int | None = None, targets=None, sampler: str = "full",
                     k: int = 10, batch_size: int | None = None, chunk_size: int | None = None,
                     vmap_chunk: int | None = None, strategy: str = "auto",
                     memory_budget: int = DEFAULT_MEMORY_BUDGET, max_evaluations: int | None = MAX_EVALUATIONS,
                     progress: Progress | None = None, cache=None, extra_inputs: dict | None = None) -> Surface:
    """g(alpha, beta) on ``plane`` for each panel of ``profiles`` (label -> NoiseProfile, or None for
    the noise-free panel): the expected loss over ``draws`` draws at each grid point.

    Speed and memory only (the numbers do not depend on them beyond float rounding): ``batch_size``
    samples per forward pass and ``chunk_size`` grid points per chunk (None: from ``memory_budget``
    bytes), ``strategy`` ("auto", "loop", "vmap"; see landscape.evaluator). ``max_evaluations``
    refuses larger jobs before any work (None: no limit)."""
    started = time.perf_counter()
    profiles = {"none": None} if profiles is None else dict(profiles)
    if not profiles:
        raise ValueError("profiles must name at least one panel (use {'none': None} for the noise-free one)")
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, found {bn!r}")
    res = _resolution(resolution)
    if isinstance(draws, bool) or int(draws) != draws or int(draws) < 1:
        raise expected("draws", "an integer >= 1 (noise draws per grid point)", draws)
    if chunk_size is not None and int(chunk_size) < 1:
        raise expected("chunk_size", "an integer >= 1 (grid points per chunk)", chunk_size)
    check_memory_budget(memory_budget)
    per_point = sum(1 if prof is None else int(draws) for prof in profiles.values())
    check_evaluations((res[0] * res[1] + len(plane.markers)) * per_point,
                      f"this surface ({res[0]} x {res[1]} grid points + {len(plane.markers)} markers, "
                      f"x {per_point} evaluations per point over {len(profiles)} panels)", max_evaluations)
    alphas, betas = _axis(alpha_range, res[0], "alpha_range"), _axis(beta_range, res[1], "beta_range")
    noisy = {p: prof for p, prof in profiles.items() if prof is not None}
    targets = _resolve_targets(model, targets, noisy.values()) if noisy else targets
    for label, prof in noisy.items():
        _check_profile(label, prof, targets)
    X, Y = as_tensors(dataset, max_samples)
    recal_X = None
    if bn == "recalibrate":
        recal_X = as_tensors(recal_dataset)[0] if recal_dataset is not None else X
    inputs = {
        "plane": {"kind": plane.kind, "anchors": _cache.tensor_hash(plane.anchors),
                  "markers": {m: list(v) for m, v in plane.markers.items()}, "marker_order": list(plane.markers)},
        "profiles": {p: (None if prof is None else {"name": getattr(prof, "name", p), "hash": _profile_hash(prof)})
                     for p, prof in profiles.items()},
        "panel_order": list(profiles),
        "data": {"split": split, "n": int(Y.shape[0]), "hash": _cache.tensor_hash({"X": X, "Y": Y})},
        "targets": targets.describe() if targets is not None else None,
        "alpha_range": list(map(float, alpha_range)), "beta_range": list(map(float, beta_range)),
        "resolution": list(map(int, res)), "draws": int(draws), "seed": int(seed), "sampler": sampler,
        "k": int(k), "bn": bn,
        "recal": None if bn != "recalibrate" else {"hash": _cache.tensor_hash({"X": recal_X}), "batches": recal_batches},
        **(extra_inputs or {}),
    }
    store = _cache.as_cache(cache)
    if store is not None:
        hit = store.load(inputs, Surface)
        if hit is not None:
            return hit

    device = next(model.parameters()).device  # draws go to the model's device once, not once per chunk
    ev = Evaluator(model, X, Y, batch_size=batch_size, vmap_chunk=vmap_chunk, strategy=strategy,
                   memory_budget=memory_budget)
    job = SurfaceJob(ev, plane,
                     tuple(profiles), {p: (None if prof is None else draw_eta(prof, draws, seed, sampler, k).to(device))
                                       for p, prof in profiles.items()},
                     targets, bn, recal_X, recal_batches)
    marks = np.array([plane.markers[m] for m in plane.markers], dtype=np.float64).reshape(-1, 2)
    if chunk_size is None:
        n_t = 0 if targets is None else sum(int(np.prod(layer.shape)) for layer in targets.layers)
        chunk_size = ev.points_per_chunk(per_point, n_t)
    chunks = GridChunks(alphas, betas, marks, int(chunk_size))
    # Under torchrun the chunks are shared between ranks; every rank gets the whole surface.
    partial = None if store is None else store.partial(inputs, chunks.size, len(chunks))  # resumes a stopped run
    parts = map_chunks(lambda c: evaluate_chunk(job, c), chunks, progress, store=partial)
    try:
        full = {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}
    except MemoryError as err:
        raise UserError(f"the surface's {chunks.total:,} points do not fit in memory as a result: "
                        "choose a coarser grid") from err
    ng, P = chunks.num_grid, len(job.panels)
    shape = (P, len(alphas), len(betas))
    result = Surface(alphas, betas, job.panels, full["loss"][:, :ng].reshape(shape),
                     full["accuracy"][:, :ng].reshape(shape), full["loss_std"][:, :ng].reshape(shape),
                     dict(plane.markers), full["loss"][:, ng:], full["accuracy"][:, ng:],
                     _meta("surface", inputs, started), accuracy_std=full["accuracy_std"][:, :ng].reshape(shape),
                     marker_loss_std=full["loss_std"][:, ng:], marker_accuracy_std=full["accuracy_std"][:, ng:])
    if store is not None and rank_and_world()[0] == 0:  # one writer per surface
        store.save(inputs, result)
    return result


def plane_surface(sgd: nn.Module, dat_a: nn.Module, dat_b: nn.Module, dataset, **kwargs) -> Surface:
    """Paper Fig. 1: g(alpha, beta) on w_SGD + alpha u + beta v, u = w_A - w_SGD,
    v = 2 w_B - w_A - w_SGD (SGD at (0, 0), DAT-A at (1, 0), DAT-B at (0.5, 0.5)).

    Keyword arguments as ``surface_on_plane``; the default grid is the paper's alpha in [-0.5, 1.5],
    beta in [-0.3, 0.8]. The three models must share an architecture (ValueError naming the first
    differing tensor otherwise).
    """
    plane = trio_plane(sgd, dat_a, dat_b)
    inputs = {"models": {lab: _cache.state_hash(m) for lab, m in zip(("SGD", "DAT-A", "DAT-B"), (sgd, dat_a, dat_b))}}
    return surface_on_plane(plane, sgd, dataset, extra_inputs=inputs, **kwargs)


def free_plane(model: nn.Module, dataset, *, direction_seed: int = 0, alpha_range=(-1.0, 1.0),
               beta_range=(-1.0, 1.0), **kwargs) -> Surface:
    """g(alpha, beta) on w + alpha d1 + beta d2 with two filter-normalised Gaussian directions
    (Li et al. 2018) drawn from ``direction_seed``; the model sits at (0, 0)."""
    plane = random_plane(model, torch.Generator().manual_seed(int(direction_seed)))
    inputs = {"models": {"model": _cache.state_hash(model)}, "direction_seed": int(direction_seed)}
    return surface_on_plane(plane, model, dataset, alpha_range=alpha_range, beta_range=beta_range,
                            extra_inputs=inputs, **kwargs)
