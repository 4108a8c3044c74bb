"""Checks of the numbers that define a device: a finite scalar, a mean vector, a covariance
(square, finite, symmetric, positive semi-definite, or repaired by clipping its eigenvalues)."""

from __future__ import annotations

import math

import numpy as np


def finite_number(name: str, value, minimum=None, strict=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, found {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, found {value}")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, found {value}")
    return value


def check_covariance(sigma, n=None, repair=False, what="Sigma"):
    """Validate a dense covariance: square, finite, symmetric, positive semi-definite.

    Returns (sigma as float64 array, report dict). With repair=True, negative eigenvalues are
    clipped to zero and the report says by how much the matrix changed; otherwise a matrix with
    an eigenvalue below -1e-10 * max|eigenvalue| is refused, naming its most negative eigenvalue.
    """
    # torch is imported here, not at the top: finite_number checks CrossbarParams while the dashboard
    # draws its forms, before torch (seconds to import) has loaded.
    import torch

    try:
        s = np.asarray(sigma, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be a numeric matrix, found {type(sigma).__name__}") from err
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"{what} must be a square matrix, found shape {s.shape}")
    if n is not None and s.shape[0] != n:
        raise ValueError(f"{what} must be {n} x {n}, found {s.shape[0]} x {s.shape[1]}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{what} must be finite, found {int((~np.isfinite(s)).sum())} NaN/inf entries")
    asym = float(np.max(np.abs(s - s.T))) if s.size else 0.0
    if asym > 1e-8 * max(float(np.max(np.abs(s))), 1e-300):
        raise ValueError(f"{what} must be symmetric, found max |S - S^T| = {asym:.3g}")
    s = 0.5 * (s + s.T)
    if np.any(np.diag(s) < 0):
        raise ValueError(f"{what} has negative variances on its diagonal, e.g. {float(np.diag(s).min()):.3g}")
    # A Cholesky factor proves positive definiteness at a fraction of an eigendecomposition's cost.
    st = torch.from_numpy(s)
    if s.size and int(torch.linalg.cholesky_ex(st)[1]) == 0:
        return s, {"most_negative_eigenvalue": None, "positive_definite": True, "repaired": False}
    evals, evecs = (x.numpy() for x in torch.linalg.eigh(st))
    most_negative = float(evals.min()) if evals.size else 0.0
    tol = 1e-10 * max(float(np.abs(evals).max()) if evals.size else 0.0, 1e-300)
    report = {"most_negative_eigenvalue": most_negative, "positive_definite": False, "repaired": False}
    if most_negative < -tol:
        if not repair:
            raise ValueError(
                f"{what} must be positive semi-definite, found most negative eigenvalue "
                f"{most_negative:.6g} (clip negative eigenvalues with `dat profile dense --repair`, "
                f"or repair=True in Python)"
            )
        fixed = (evecs * np.clip(evals, 0.0, None)) @ evecs.T
        fixed = 0.5 * (fixed + fixed.T)
        report.update(
            repaired=True,
            clipped_eigenvalues=int((evals < 0).sum()),
            frobenius_change=float(np.linalg.norm(fixed - s)),
            relative_change=float(np.linalg.norm(fixed - s) / max(np.linalg.norm(s), 1e-300)),
        )
        s = fixed
    return s, report


def check_mean(mu, n, what="mu") -> np.ndarray:
    try:
        m = np.asarray(mu, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be a numeric vector, found {type(mu).__name__}") from err
    if m.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), found {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{what} must be finite, found {int((~np.isfinite(m)).sum())} NaN/inf entries")
    return m
