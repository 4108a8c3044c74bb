"""Saving and loading devices in one versioned format.

A profile file is an .npz holding
- `__meta__`: a JSON string {"format": "dat-profile", "format_version": 1, "kind": "crossbar" |
  "fitted" | "dense", "name", "parameters", "units", "targets" (a `Targets.describe()` or null),
  "content_hash", "versions"};
- the arrays of the kind: none for "crossbar" (its parameters are the JSON), `mu` and `sigma`
  for "fitted" (one tile) and "dense" (n values).
`content_hash` is the sha256 of the kind, the parameters and the arrays (float64 bytes); it is
checked on load. Files are written atomically (temporary file, then os.replace) and read with
allow_pickle=False.

Plain dense covariances from elsewhere (.npz with `sigma` and optionally `mu`, or a .npy of
Sigma) are read by `load_dense`, which validates them (shape, symmetry, finiteness, PSD).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import scipy
import torch

import dat
from dat.devices import CROSSBAR_UNITS, CrossbarParams, DenseDevice
from dat.measure import FittedTile
from dat.fileio import atomic_write

FORMAT = "dat-profile"
FORMAT_VERSION = 1


def _describe(device) -> tuple[str, dict, dict, dict[str, np.ndarray]]:
    """(kind, parameters, units, arrays) of a device."""
    if isinstance(device, CrossbarParams):
        return "crossbar", device.to_dict(), dict(CROSSBAR_UNITS), {}
    if isinstance(device, FittedTile):
        if not device.is_fitted():
            raise ValueError("FittedTile is not fitted yet: call fit(maps) first")
        shrink = device.shrinkage_ if math.isfinite(device.shrinkage_) else None
        params = {"estimator": device.estimator, "k": device.k, "tile_shape": list(device.tile_shape_),
                  "shrinkage": shrink, "n_samples": device.n_samples_}
        units = {"mu": "fraction of g_max", "sigma": "(fraction of g_max)^2", "tile_shape": "cells (rows, cols)"}
        return "fitted", params, units, {"mu": device.mu_, "sigma": device.sigma_}
    if isinstance(device, DenseDevice):
        units = {"mu": "eta units", "sigma": "eta units squared"}
        return "dense", {"n": device.n, "repair": device.repair_report}, units, {"mu": device.mu, "sigma": device.sigma}
    raise TypeError(f"device must be CrossbarParams, FittedTile or DenseDevice, found {type(device).__name__}")


def _hash(kind: str, params: dict, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(json.dumps({"kind": kind, "parameters": params}, sort_keys=True).encode())
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key], dtype=np.float64).tobytes())
    return h.hexdigest()


def device_hash(device) -> str:
    """Content hash of a device: equal for a device and the same device saved and loaded."""
    kind, params, _, arrays = _describe(device)
    return _hash(kind, params, arrays)


def _device_name(device) -> str:
    return getattr(device, "name", None) or "profile"


def save_device(path, device, name: str | None = None, targets=None) -> dict:
    """Write `device` to `path` (.npz) atomically; returns the metadata written."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"profile files end in .npz, found {path.name!r}")
    kind, params, units, arrays = _describe(device)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": name or _device_name(device),
        "parameters": params,
        "units": units,
        "targets": targets.describe() if targets is not None else None,
        "content_hash": _hash(kind, params, arrays),
        "versions": {"dat": dat.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
                     "torch": torch.__version__},
    }
    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, __meta__=np.array(json.dumps(meta, sort_keys=True)),
                     **{k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()})

    atomic_write(path, write)
    return meta


def read_metadata(path) -> dict:
    """The JSON metadata of a profile file, after checking format and version."""
    return _read(path)[0]


def _read(path):
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"profile file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise ValueError(f"{path} is not a {FORMAT} file (.npz with JSON metadata): {err}") from None
    if "__meta__" not in files:
        raise ValueError(
            f"{path} is not a {FORMAT} file: no '__meta__' entry (found {sorted(files)}); "
            "a plain dense covariance is read with load_dense"
        )
    try:
        meta = json.loads(str(files.pop("__meta__")))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: '__meta__' is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path}: expected format {FORMAT!r}, found {found!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: {FORMAT} format_version {meta.get('format_version')!r} is not supported "
            f"(this version of dat reads format_version {FORMAT_VERSION})"
        )
    return meta, files


def load_device(path, repair: bool = False):
    """Read a device saved by `save_device`; the content hash is verified.

    `repair` applies to dense devices only: clip negative eigenvalues instead of refusing.
    """
    meta, arrays = _read(path)
    kind, params = meta.get("kind"), meta.get("parameters")
    need = {"crossbar": set(), "fitted": {"mu", "sigma"}, "dense": {"mu", "sigma"}}
    if kind not in need:
        raise ValueError(f"{path}: kind must be one of {sorted(need)}, found {kind!r}")
    if not need[kind] <= set(arrays):
        raise ValueError(f"{path}: a {kind} profile needs arrays {sorted(need[kind])}, found {sorted(arrays)}")
    if not isinstance(params, dict):
        raise ValueError(f"{path}: 'parameters' must be an object, found {type(params).__name__}")
    if _hash(kind, params, {k: arrays[k] for k in need[kind]}) != meta.get("content_hash"):
        raise ValueError(f"{path}: content hash mismatch: the file is corrupted or was edited")
    if kind == "crossbar":
        fields = {f.name for f in dataclasses.fields(CrossbarParams)}
        unknown = set(params) - fields
        if unknown:
            raise ValueError(f"{path}: unknown crossbar parameters {sorted(unknown)}")
        return CrossbarParams(**params)
    if kind == "fitted":
        shrink = params.get("shrinkage")
        return FittedTile.from_arrays(
            arrays["mu"], arrays["sigma"], tuple(params["tile_shape"]), estimator=params["estimator"],
            shrinkage=float("nan") if shrink is None else shrink, n_samples=params["n_samples"],
            k=params["k"], name=meta.get("name", "fitted"),
        )
    dev = DenseDevice(arrays["mu"], arrays["sigma"], name=meta.get("name", "dense"), repair=repair)
    # keep the saved repair record: the stored matrix is already the repaired one
    dev.repair_report = params.get("repair", dev.repair_report)
    return dev


def load_dense(path, repair: bool = False, name: str | None = None) -> DenseDevice:
    """A dense device from a plain file: .npz with `sigma` (and optionally `mu`, default zero) or
    a .npy holding Sigma. Validated: square, symmetric, finite, PSD (or repaired)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"dense covariance file not found: {path}")
    if path.suffix.lower() == ".npy":
        sigma, mu = np.load(path, allow_pickle=False), None
    elif path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "__meta__" in z.files:
                raise ValueError(f"{path} is a {FORMAT} file: read it with load_device")
            if "sigma" not in z.files:
                raise ValueError(f"{path}: expected an array named 'sigma' (and optionally 'mu'), found {sorted(z.files)}")
            sigma = z["sigma"]
            mu = z["mu"] if "mu" in z.files else None
    else:
        raise ValueError(f"dense covariance files are .npz or .npy, found {path.suffix!r}")
    sigma = np.asarray(sigma)
    if not np.issubdtype(sigma.dtype, np.number):
        raise ValueError(f"{path}: sigma must be numeric, found dtype {sigma.dtype}")
    if mu is None:
        mu = np.zeros(sigma.shape[0] if sigma.ndim >= 1 else 0)
    return DenseDevice(mu, sigma, name=name or path.stem, repair=repair)


# -- device references: a preset name or a saved profile file -------------------------------------
def resolve_device(spec):
    """A device from a preset name ("device-A", "device-B") or a saved profile path; device
    objects pass through. Returns (device, name)."""
    from dat.devices import PRESETS

    if not isinstance(spec, (str, os.PathLike)):
        return spec, getattr(spec, "name", type(spec).__name__)
    spec = os.fspath(spec)
    if spec in PRESETS:
        return PRESETS[spec], spec
    if os.path.isfile(spec):
        device = load_device(spec)
        return device, getattr(device, "name", None) or Path(spec).stem
    raise ValueError(f"Invalid device: expected a preset name {sorted(PRESETS)} or the path of a saved "
                     f"profile (.npz), found {spec!r} (no such file)")


def make_profile(spec, targets, name: str | None = None, stress: float = 1.0):
    """Bind a device (preset, path or object) to a model's targets; `stress` multiplies its stds
    (dat.devices.apply_stress; 1 = the device as it is)."""
    from dat.devices import apply_stress
    from dat.profiles import bind

    device, _ = resolve_device(spec)
    return bind(apply_stress(device, stress), targets, name=name)
