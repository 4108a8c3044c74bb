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
Every file is read through `dat.arrayfile` (no pickle, clear messages); anything wrong with a file
raises `dat.errors.UserError` with what was expected and what was found.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import scipy
import torch

import dat
from dat.arrayfile import numeric, read_npy, read_npz
from dat.errors import UserError, expected
from dat.fileio import atomic_write
from dat.noise.checks import finite_number
from dat.noise.crossbar import CROSSBAR_UNITS, PRESETS, CrossbarParams
from dat.noise.dense import DenseDevice
from dat.noise.fileformat import FORMAT, FORMAT_VERSION, read
from dat.noise.fitted import ESTIMATORS, FittedTile
from dat.noise.profile import bind



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
        raise expected("profile file name", "a name ending in .npz", repr(path.name))
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


def _field(path, params: dict, key: str, check, wanted: str):
    """``params[key]`` after ``check(value)`` holds; otherwise an expected-vs-found UserError."""
    if key not in params:
        raise UserError(f"{path}: expected parameter {key!r} ({wanted}), found none (keys {list(params)})")
    value = params[key]
    if not check(value):
        raise UserError(f"{path}: expected parameter {key!r} to be {wanted}, found {value!r}")
    return value


def _is_int(v, minimum=0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= minimum


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_device(path, repair: bool = False):
    """Read a device saved by `save_device`; the content hash is verified.

    `repair` applies to dense devices only: clip negative eigenvalues instead of refusing.
    Anything wrong with the file raises `dat.errors.UserError` naming the file and the field.
    """
    meta, arrays = read(path)
    kind, params = meta.get("kind"), meta.get("parameters")
    need = {"crossbar": set(), "fitted": {"mu", "sigma"}, "dense": {"mu", "sigma"}}
    if kind not in need:
        raise UserError(f"{path}: expected kind one of {sorted(need)}, found {kind!r}")
    if not need[kind] <= set(arrays):
        raise UserError(f"{path}: a {kind} profile needs arrays {sorted(need[kind])}, found {sorted(arrays)}")
    for key in need[kind]:
        numeric(arrays[key], str(path), key)
    if not isinstance(params, dict):
        raise UserError(f"{path}: expected 'parameters' to be an object, found {type(params).__name__}")
    if _hash(kind, params, {k: arrays[k] for k in need[kind]}) != meta.get("content_hash"):
        raise UserError(f"{path}: content hash mismatch: the file is corrupted or was edited")
    name = meta.get("name", kind)
    if not isinstance(name, str) or not name:
        raise UserError(f"{path}: expected 'name' to be a non-empty string, found {name!r}")
    try:
        return _build(path, kind, params, arrays, name, repair)
    except UserError:
        raise
    except (TypeError, ValueError) as err:  # a value the device's own validation refuses
        raise UserError(f"{path}: {err}") from None


def _build(path, kind: str, params: dict, arrays: dict, name: str, repair: bool):
    if kind == "crossbar":
        fields = {f.name for f in dataclasses.fields(CrossbarParams)}
        unknown = set(params) - fields
        if unknown:
            raise UserError(f"{path}: expected crossbar parameters from {sorted(fields)}, found unknown "
                            f"{sorted(unknown)}")
        return CrossbarParams(**params)
    if kind == "fitted":
        estimator = _field(path, params, "estimator", lambda v: isinstance(v, str) and v in ESTIMATORS,
                           f"one of {sorted(ESTIMATORS)}")
        tile = _field(path, params, "tile_shape",
                      lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(x, 1) for x in v),
                      "[rows, cols] of positive integers")
        k = _field(path, params, "k", lambda v: _is_int(v, 1), "a positive integer")
        n_samples = _field(path, params, "n_samples", _is_int, "a non-negative integer")
        shrink = _field(path, params, "shrinkage", lambda v: v is None or _is_number(v), "a number or null")
        return FittedTile.from_arrays(
            arrays["mu"], arrays["sigma"], tuple(tile), estimator=estimator,
            shrinkage=float("nan") if shrink is None else float(shrink), n_samples=n_samples, k=k, name=name,
        )
    n = _field(path, params, "n", lambda v: _is_int(v, 1), "a positive integer")
    report = params.get("repair")
    if report is not None and not isinstance(report, dict):
        raise UserError(f"{path}: expected parameter 'repair' to be an object, found {report!r}")
    dev = DenseDevice(arrays["mu"], arrays["sigma"], name=name, repair=repair)
    if dev.n != n:
        raise UserError(f"{path}: expected Sigma of {n} x {n} (parameter 'n'), found {dev.n} x {dev.n}")
    # keep the saved repair record: the stored matrix is already the repaired one
    dev.repair_report = report if report is not None else dev.repair_report
    return dev


def load_dense(path, repair: bool = False, name: str | None = None) -> DenseDevice:
    """A dense device from a plain file: .npz with `sigma` (and optionally `mu`, default zero) or
    a .npy holding Sigma. Validated: square, symmetric, finite, PSD (or repaired). Anything wrong
    raises `dat.errors.UserError` naming the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        sigma, mu = read_npy(path, what="dense covariance file"), None
    elif suffix == ".npz":
        arrays = read_npz(path, what="dense covariance file")
        if "__meta__" in arrays:
            raise UserError(f"{path} is already a saved {FORMAT} file: use it as it is (`dat profile inspect "
                            f"{path}`), not through `dat profile dense`")
        if "sigma" not in arrays:
            raise UserError(f"{path}: expected an array named 'sigma' (and optionally 'mu'), found {list(arrays)}")
        sigma = numeric(arrays["sigma"], str(path), "sigma")
        mu = numeric(arrays["mu"], str(path), "mu") if "mu" in arrays else None
    else:
        raise expected("dense covariance file", "a .npz or .npy file", repr(str(path)))
    if mu is None:
        mu = np.zeros(sigma.shape[0] if sigma.ndim >= 1 else 0)
    try:
        return DenseDevice(mu, sigma, name=name or path.stem, repair=repair)
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: {err}") from None


# -- device references: a preset name or a saved profile file -------------------------------------
def resolve_device(spec):
    """A device from a preset name ("device-A", "device-B") or a saved profile path; device
    objects pass through. Returns (device, name)."""
    if not isinstance(spec, (str, os.PathLike)):
        return spec, getattr(spec, "name", type(spec).__name__)
    spec = os.fspath(spec)
    if spec in PRESETS:
        return PRESETS[spec], spec
    if os.path.isfile(spec):
        device = load_device(spec)
        return device, getattr(device, "name", None) or Path(spec).stem
    raise UserError(f"Invalid device: expected a preset name {sorted(PRESETS)} or the path of a saved "
                     f"profile (.npz), found {spec!r} (no such file)")


def apply_stress(device, stress: float = 1.0):
    """The device with every std multiplied by `stress` (covariance by stress^2; the mean is kept).

    A stress factor is an experiment knob, not a device property: it makes a small model feel the
    noise a larger one would. stress = 1 returns the device unchanged. A stressed crossbar device is
    named "<name>-stress<stress>" so every result that used it says so.
    """
    stress = finite_number("stress", stress, 0.0, strict=True)
    if stress == 1.0:
        return device
    if isinstance(device, CrossbarParams):
        return device.replace(scale=device.scale * stress, name=f"{device.name}-stress{stress:g}")
    if isinstance(device, DenseDevice):
        return DenseDevice(device.mu, device.sigma * stress**2, name=f"{device.name}-stress{stress:g}")
    if isinstance(device, FittedTile):
        out = copy.copy(device)
        out.sigma_ = device.sigma_ * stress**2
        out.name = f"{device.name}-stress{stress:g}"
        out.__dict__.pop("captured_variance_", None)
        return out
    raise TypeError(f"device must be CrossbarParams, FittedTile or DenseDevice, found {type(device).__name__}")


def make_profile(spec, targets, name: str | None = None, stress: float = 1.0):
    """Bind a device (preset, path or object) to a model's targets; `stress` multiplies its stds
    (:func:`apply_stress`; 1 = the device as it is)."""
    device, _ = resolve_device(spec)
    return bind(apply_stress(device, stress), targets, name=name)
