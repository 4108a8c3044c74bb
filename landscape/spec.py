"""A landscape described by files and names (checkpoints, device presets or profile files, dataset),
so that a figure can be recomputed from its bundle's JSON. ``run_spec`` loads everything and calls
the pure functions of ``landscape.curves`` and ``landscape.surfaces``; the CLI and ``export.reproduce`` go through it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from dat.errors import UserError, expected
from dat.trio import LABELS

from . import inputs as _inputs
from .curves import noise_curves
from .defaults import CURVE_POINTS, CURVE_SPAN, SURFACE_RESOLUTION, default_draws, default_ranges
from .evaluator import DEFAULT_MEMORY_BUDGET
from .inputs import check_evaluations
from .results import Curves, Surface
from .surfaces import free_plane, plane_surface

KINDS = ("curves", "surface", "free-plane")


@dataclass
class LandscapeSpec:
    """Everything that determines a landscape, by reference. Units and meanings as in curves.py and surfaces.py."""

    kind: str                                     # "curves" | "surface" | "free-plane"
    checkpoints: dict                             # label -> checkpoint path (surface: SGD, DAT-A, DAT-B)
    devices: dict = field(default_factory=lambda: {"device-A": "device-A", "device-B": "device-B"})
    dataset: str = "digits"                       # dat.data.load_dataset name
    data_root: str | None = None                  # folder for CIFAR
    split: str = "train"                          # "train" (un-augmented) or "test"
    max_samples: int | None = None                # first n samples of the split (None: all)
    targets: str = "last-linear"                  # noise targets: "last-linear" | "all-analog"
    tile: int = 64                                # crossbar tile size T (cells)
    units: str = "relative"                       # eta units: "relative" (x max|W|) | "absolute"
    stress: float = 1.0                           # multiplier on every device std (as the models were trained)
    draws: int | None = None                      # noise draws (curves: directions; surface: S); None: by kind
    seed: int = 0                                 # seed of the noise draws
    sampler: str = "full"                         # "full" (exact) | "low-rank" (mu + A_k z)
    k: int = 10                                   # rank of the low-rank sampler
    alphas: list | None = None                    # curves: explicit alpha grid (None: from r)
    span: float = CURVE_SPAN                      # curves: default grid is [-span r, span r]
    num_alphas: int = CURVE_POINTS                # curves: default grid size
    band: str = "std"                             # curves: "std" | "p10-p90"
    alpha_range: tuple | None = None              # surface: alpha interval (None: by kind, landscape.defaults)
    beta_range: tuple | None = None               # surface: beta interval (None: by kind)
    resolution: tuple = SURFACE_RESOLUTION        # surface: (num alpha, num beta) grid points
    bn: str = "interpolate"                       # surface: "interpolate" | "recalibrate"
    recal_batches: int | None = None              # surface: batches of train data for recalibration
    direction_seed: int = 0                       # free plane: seed of the two random directions
    batch_size: int | None = None                 # samples per forward pass (None: from the memory budget)
    chunk_size: int | None = None                 # grid points per evaluated chunk (None: from the budget)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, found {self.kind!r}")
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', found {self.split!r}")
        if self.kind == "surface" and set(self.checkpoints) != set(LABELS):
            raise ValueError(f"a surface needs checkpoints labelled {LABELS}, found {sorted(self.checkpoints)}")
        if self.kind == "free-plane" and len(self.checkpoints) != 1:
            raise ValueError(f"a free plane takes one checkpoint, found {len(self.checkpoints)}")
        if self.kind == "curves" and (not self.checkpoints or not self.devices):
            raise ValueError("curves need at least one checkpoint and one device")
        alpha_range, beta_range = default_ranges(self.kind)
        self.alpha_range = tuple(alpha_range if self.alpha_range is None else self.alpha_range)
        self.beta_range = tuple(beta_range if self.beta_range is None else self.beta_range)
        self.draws = default_draws(self.kind) if self.draws is None else self.draws
        self.resolution = tuple(self.resolution) if not isinstance(self.resolution, int) else (self.resolution,) * 2
        self._check_numbers()

    def _check_numbers(self) -> None:
        """Refuse values that would silently mean something else (a reversed grid, no draws)."""
        def whole(name, low, what):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low):
                raise expected(name.replace("_", "-"), f"an integer >= {low} ({what})", v)

        whole("draws", 1, "noise draws")
        whole("max_samples", 1, "samples of the split")
        whole("batch_size", 1, "samples per forward pass")
        whole("chunk_size", 1, "grid points per chunk")
        whole("k", 1, "rank of the low-rank sampler")
        whole("tile", 1, "crossbar tile size")
        if self.kind == "curves":
            if not (np.isfinite(self.span) and self.span > 0):
                raise expected("span", "a positive number (the alpha grid is [-span r, span r])", self.span)
            if self.alphas is None:
                whole("num_alphas", 3, "points of the alpha grid")
        else:
            res = self.resolution
            if len(res) != 2 or any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 2 for r in res):
                raise expected("resolution", "grid points along alpha and beta, two integers >= 2", res)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checkpoints"] = {k: os.fspath(v) for k, v in self.checkpoints.items()}
        d["devices"] = {k: os.fspath(v) for k, v in self.devices.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LandscapeSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown landscape spec fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


# What a landscape takes from the checkpoints' own training, so it perturbs exactly what training
# perturbed: the CLI and the dashboard both build their specs here.
TRAINED_FIELDS = ("dataset", "targets", "tile", "units", "stress")


def trained_settings(checkpoints: dict, given: dict | None = None) -> dict:
    """The dataset, noise targets, tile, units and stress the checkpoints {label: path} were trained
    with, where ``given`` (the caller's explicit choices) does not set them; all must agree (a
    landscape compares models under one device model)."""
    from dat.checkpoint import read_meta
    from dat.data import dataset_named_by

    given = {k: v for k, v in (given or {}).items() if k in TRAINED_FIELDS and v is not None}
    if not checkpoints:
        raise UserError("a landscape needs at least one checkpoint, found none")
    found = {}
    for label, path in checkpoints.items():
        meta = read_meta(path)
        config = meta.get("config") or {}
        found[label] = dict(dataset=given.get("dataset") or dataset_named_by(meta, f"checkpoint {path}"),
                            targets=config.get("targets", "last-linear"), tile=int(config.get("tile", 64)),
                            units=config.get("units", "relative"), stress=float(config.get("stress", 1.0)),
                            **{k: v for k, v in given.items() if k != "dataset"})
    for key in TRAINED_FIELDS:
        values = {label: f[key] for label, f in found.items()}
        if len(set(values.values())) != 1:
            raise UserError(f"the checkpoints must share their {key} (a landscape compares models under one "
                            f"device model), found {values}")
    return next(iter(found.values()))


def spec_from_checkpoints(kind: str, checkpoints: dict, devices: dict, *, data_root=None, **settings) -> LandscapeSpec:
    """The one recipe for a landscape of trained checkpoints: dataset, targets, tile, units and stress
    come from the checkpoints (:func:`trained_settings`; a setting given here overrides one of
    them), the data folder from the caller (the user's --data-root or the workspace), everything
    else from ``settings``."""

    if len(set(map(str, devices.values()))) != len(devices):
        raise UserError(f"expected a different device for each panel, found {dict(devices)}")
    trained = trained_settings(checkpoints, settings)
    rest = {k: v for k, v in settings.items() if k not in TRAINED_FIELDS}
    return LandscapeSpec(kind=kind, checkpoints={k: str(v) for k, v in checkpoints.items()}, devices=dict(devices),
                         data_root=None if data_root is None else str(data_root), **trained, **rest)


def load_models(spec: LandscapeSpec) -> dict:
    from dat.checkpoint import load_checkpoint

    return {label: load_checkpoint(path).model for label, path in spec.checkpoints.items()}


def load_profiles(spec: LandscapeSpec, model) -> dict:
    """label -> NoiseProfile bound to ``model``'s targets; a device is a preset name or a saved file."""
    from dat.noise.io import make_profile
    from dat.noise.targets import find_targets

    targets = find_targets(model, spec.targets, tile=(spec.tile, spec.tile), units=spec.units)
    out = {}
    for label, ref in spec.devices.items():
        try:
            out[label] = make_profile(ref, targets, name=label, stress=spec.stress)
        except ValueError as err:  # a bad file or a device that does not fit the model: the user's to fix
            raise UserError(f"device {label!r}: {err}") from err
    return out


def load_split(spec: LandscapeSpec):
    from dat.data import load_dataset_named_by

    # The spec names which dataset; the folder is the caller's (the user's --data-root or the
    # workspace), and CIFAR's md5 check always runs.
    bundle = load_dataset_named_by(spec.dataset, spec.data_root, source="landscape spec")
    return bundle, (bundle.train_eval if spec.split == "train" else bundle.test)


@dataclass
class SpecInputs:
    """What a spec loads: its models, data split and bound profiles. Specs that name the same
    checkpoints, devices and data (a trio's curves and surface) can share one load."""

    models: dict
    bundle: object
    data: object
    profiles: dict


def load_inputs(spec: LandscapeSpec) -> SpecInputs:
    models = load_models(spec)
    bundle, data = load_split(spec)
    profiles = load_profiles(spec, next(iter(models.values()))) if spec.devices else {}
    return SpecInputs(models, bundle, data, profiles)


def run_spec(spec: LandscapeSpec, progress=None, cache=None, inputs: SpecInputs | None = None, *,
             memory_budget: int = DEFAULT_MEMORY_BUDGET, allow_large: bool = False) -> Curves | Surface:
    """Compute the spec's landscape, from ``inputs`` already loaded for a spec with the same
    checkpoints, devices and data (``load_inputs``), or loading them here. ``memory_budget`` (bytes)
    bounds the working memory; jobs of more than inputs.MAX_EVALUATIONS model evaluations are
    refused before anything is loaded unless ``allow_large``."""
    limit = None if allow_large else _inputs.MAX_EVALUATIONS
    check_size(spec, limit)
    inputs = load_inputs(spec) if inputs is None else inputs
    models, bundle, data, profiles = inputs.models, inputs.bundle, inputs.data, inputs.profiles
    first = next(iter(models.values()))
    common = dict(draws=spec.draws, seed=spec.seed, sampler=spec.sampler, k=spec.k, split=spec.split,
                  max_samples=spec.max_samples, batch_size=spec.batch_size, progress=progress, cache=cache,
                  memory_budget=memory_budget, max_evaluations=limit)
    if spec.kind == "curves":
        return noise_curves(models, profiles, data, alphas=spec.alphas, span=spec.span, num_alphas=spec.num_alphas,
                            band=spec.band, **common)
    surface_kw = dict(profiles={"none": None, **profiles}, resolution=spec.resolution, bn=spec.bn,
                      recal_dataset=bundle.train_eval if spec.bn == "recalibrate" else None,
                      recal_batches=spec.recal_batches, chunk_size=spec.chunk_size, **common)
    if spec.kind == "surface":
        return plane_surface(*(models[label] for label in LABELS), data, alpha_range=spec.alpha_range,
                             beta_range=spec.beta_range, **surface_kw)
    return free_plane(first, data, direction_seed=spec.direction_seed, alpha_range=spec.alpha_range,
                      beta_range=spec.beta_range, **surface_kw)


def check_size(spec: LandscapeSpec, limit: int | None) -> None:
    """The evaluation count of ``noise_curves`` / ``surface_on_plane`` (the same rule), checked before
    checkpoints and data load."""
    if spec.kind == "curves":
        num_a = len(spec.alphas) if spec.alphas is not None else int(spec.num_alphas)
        m, d = len(spec.checkpoints), len(spec.devices)
        check_evaluations(m * d * spec.draws * (num_a + 2), f"these curves ({m} models x {d} devices x "
                          f"{spec.draws} draws x ({num_a} alphas + 2))", limit)
        return
    markers = len(LABELS) if spec.kind == "surface" else 1
    per_point = 1 + len(spec.devices) * spec.draws
    na, nb = spec.resolution
    check_evaluations((na * nb + markers) * per_point,
                      f"this surface ({na} x {nb} grid points + {markers} markers, x {per_point} evaluations "
                      f"per point: 1 noise-free + {len(spec.devices)} devices x {spec.draws} draws)", limit)
