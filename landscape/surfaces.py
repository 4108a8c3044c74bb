"""2D (alpha, beta) surfaces (paper section III.C, Fig. 1): g(alpha, beta) on a plane of weights,
one panel per noise condition, on the trio plane or a free (random-direction) plane.

Pure functions: models, profiles and data in, a ``Surface`` result carrying its metadata out. The
definitions are those of DESIGN.md "Landscapes"; docs/landscape.md states every default.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dat.errors import UserError, expected
from dat.parallel import rank_and_world
from dat.trio import LABELS

from . import cache as _cache
from .directions import Plane, random_plane, trio_plane
from .evaluator import DEFAULT_MEMORY_BUDGET, Evaluator, check_memory_budget
from .inputs import (MAX_EVALUATIONS, Progress, as_tensors, check_evaluations, check_profile, draw_eta,
                     profile_hash, resolve_targets, result_meta)
from .parallel import map_chunks
from .results import Surface
from .defaults import FREE_PLANE_RANGE, SURFACE_ALPHA_RANGE, SURFACE_BETA_RANGE, SURFACE_DRAWS, SURFACE_RESOLUTION

BN_MODES = ("interpolate", "recalibrate")


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
                     alpha_range=SURFACE_ALPHA_RANGE, beta_range=SURFACE_BETA_RANGE, resolution=SURFACE_RESOLUTION,
                     draws: int = SURFACE_DRAWS,
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
    targets = resolve_targets(model, targets, noisy.values()) if noisy else targets
    for label, prof in noisy.items():
        check_profile(label, prof, targets)
    X, Y = as_tensors(dataset, max_samples)
    recal_X = None
    if bn == "recalibrate":
        recal_X = as_tensors(recal_dataset)[0] if recal_dataset is not None else X
    inputs = {
        "plane": {"kind": plane.kind, "anchors": _cache.tensor_hash(plane.anchors),
                  "markers": {m: list(v) for m, v in plane.markers.items()}, "marker_order": list(plane.markers)},
        "profiles": {p: (None if prof is None else {"name": getattr(prof, "name", p), "hash": profile_hash(prof)})
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
                     result_meta("surface", inputs, started), accuracy_std=full["accuracy_std"][:, :ng].reshape(shape),
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
    inputs = {"models": {lab: _cache.state_hash(m) for lab, m in zip(LABELS, (sgd, dat_a, dat_b))}}
    return surface_on_plane(plane, sgd, dataset, extra_inputs=inputs, **kwargs)


def free_plane(model: nn.Module, dataset, *, direction_seed: int = 0, alpha_range=FREE_PLANE_RANGE,
               beta_range=FREE_PLANE_RANGE, **kwargs) -> Surface:
    """g(alpha, beta) on w + alpha d1 + beta d2 with two filter-normalised Gaussian directions
    (Li et al. 2018) drawn from ``direction_seed``; the model sits at (0, 0)."""
    plane = random_plane(model, torch.Generator().manual_seed(int(direction_seed)))
    inputs = {"models": {"model": _cache.state_hash(model)}, "direction_seed": int(direction_seed)}
    return surface_on_plane(plane, model, dataset, alpha_range=alpha_range, beta_range=beta_range,
                            extra_inputs=inputs, **kwargs)
