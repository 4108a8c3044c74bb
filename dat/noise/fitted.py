"""Fitting a device from repeated programming maps of one crossbar tile.

A measurement is an array `maps` of shape [n_samples, rows, cols]: the deviation of every cell
from its target (fraction of g_max), measured after each of n_samples programmings of the same
tile. Files:
- .npz with the array under the key "maps";
- .csv with one line per sample holding rows*cols numbers in row-major cell order (cell (r, c) at
  column r*cols + c). The tile shape is read from an optional first line
  `# rows=R cols=C`; without it the tile must be square.

`FittedTile` estimates mu and Sigma of the rows*cols cells with shrinkage (scikit-learn's
LedoitWolf by default, OAS as an option), which keeps Sigma well conditioned when n_samples is
not much larger than the number of cells. Bound to targets (`dat.noise.profile.bind`), the fitted tile
is repeated over every tile of the layout; partial edge tiles use the matching sub-block (`FittedTile.block`).
"""

from __future__ import annotations

import csv
import functools
import math
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from dat.arrayfile import display_name, numeric, read_bytes, read_npz
from dat.errors import UserError, expected
from dat.noise.checks import check_covariance, check_mean
from dat.noise.dense import DenseBlock

# Estimator name -> its class in sklearn.covariance (imported when fitting: importing scikit-learn
# costs seconds, and most users of this module only read fitted profiles).
ESTIMATORS = {"ledoitwolf": "LedoitWolf", "oas": "OAS"}
# Fewer repeats than this leave even a shrunk covariance poorly determined: fit warns.
MIN_RECOMMENDED_SAMPLES = 10


def check_maps(maps) -> np.ndarray:
    """Validate repeated programming maps, [n_samples, rows, cols], finite, n_samples >= 2."""
    try:
        arr = np.asarray(maps, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"maps must be a numeric array [n_samples, rows, cols], found {type(maps).__name__}: {err}") from err
    if arr.ndim != 3:
        raise ValueError(f"maps must have shape [n_samples, rows, cols], found shape {arr.shape}")
    if arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ValueError(f"maps must have at least one row and one column, found shape {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 samples, found {arr.shape[0]}")
    bad = ~np.isfinite(arr)
    if bad.any():
        s, r, c = np.argwhere(bad)[0]
        raise ValueError(f"maps must be finite, found {int(bad.sum())} NaN/inf values (first at sample {s}, cell ({r}, {c}))")
    return arr


def _read_csv(raw: bytes, path: str) -> np.ndarray:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: expected a text .csv file (UTF-8), found binary data (byte "
                        f"{raw[err.start:err.start + 1]!r} at position {err.start} is not UTF-8)") from None
    lines = text.splitlines()
    shape = None
    if lines and lines[0].lstrip().startswith("#"):
        m = re.search(r"rows\s*=\s*(\d+)\D+cols\s*=\s*(\d+)", lines[0])
        if m is None:
            raise UserError(f"{path}: header must read '# rows=R cols=C', found {lines[0]!r}")
        shape = (int(m.group(1)), int(m.group(2)))
        lines = lines[1:]
    rows = []
    for i, row in enumerate(csv.reader(lines), start=2 if shape else 1):
        if not row or all(not x.strip() for x in row):
            continue  # blank lines carry no sample
        vals = []
        for j, cell in enumerate(row, start=1):
            try:
                vals.append(float(cell))
            except ValueError:
                raise UserError(f"{path}: line {i}, column {j}: expected a number, found {cell!r}") from None
        if rows and len(vals) != len(rows[0]):
            raise UserError(f"{path}: line {i} has {len(vals)} values, expected {len(rows[0])} like the first sample (ragged rows)")
        rows.append(vals)
    if not rows:
        raise UserError(f"{path}: expected one sample of numbers per line, found no samples")
    data = np.asarray(rows, dtype=np.float64)
    m = data.shape[1]
    if shape is None:
        side = math.isqrt(m)
        if side * side != m:
            raise UserError(f"{path}: {m} values per sample is not a square tile; add a first line '# rows=R cols=C'")
        shape = (side, side)
    if shape[0] * shape[1] != m:
        raise UserError(f"{path}: header says {shape[0]} x {shape[1]} = {shape[0] * shape[1]} cells, found {m} values per sample")
    return data.reshape(-1, *shape)


def load_maps(source, name: str | None = None) -> np.ndarray:
    """Read repeated programming maps from .npz (key "maps") or .csv; validated.

    ``source`` is a path or a binary file object (an upload in memory); ``name`` is what messages
    call it and, for a file object, gives the format by its suffix. Anything wrong with the file
    raises `dat.errors.UserError` naming it.
    """
    label = display_name(source, name)
    suffix = Path(label).suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise expected("measurement file", "a .npz or .csv file", repr(label))
    if suffix == ".npz":
        arrays = read_npz(source, label, what="measurement file")
        if "maps" not in arrays:
            raise UserError(f"{label}: expected an array named 'maps', found {list(arrays)}")
        maps = numeric(arrays["maps"], label, "maps")
    else:
        maps = _read_csv(read_bytes(source, label, what="measurement file"), label)
    try:
        return check_maps(maps)
    except (TypeError, ValueError) as err:
        raise UserError(f"{label}: {err}") from None


class FittedTile:
    """A tile's N(mu, Sigma) fitted from repeated programming maps (scikit-learn manners).

    Parameters: estimator ("ledoitwolf" | "oas"), k (rank for the captured-variance report),
    name. Learned: mu_ [rows*cols], sigma_ [rows*cols, rows*cols], tile_shape_, shrinkage_,
    n_samples_, captured_variance_ (top-k eigenvalues / trace).
    """

    def __init__(self, estimator: str = "ledoitwolf", k: int = 10, name: str = "fitted"):
        self.estimator = estimator
        self.k = k
        self.name = name

    def fit(self, maps) -> "FittedTile":
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {sorted(ESTIMATORS)}, found {self.estimator!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive int, found {self.k!r}")
        maps = check_maps(maps)
        n, rows, cols = maps.shape
        if n < MIN_RECOMMENDED_SAMPLES:
            warnings.warn(
                f"only {n} samples (fewer than {MIN_RECOMMENDED_SAMPLES}): Sigma is poorly determined",
                UserWarning,
                stacklevel=2,
            )
        import sklearn.covariance

        est = getattr(sklearn.covariance, ESTIMATORS[self.estimator])().fit(maps.reshape(n, rows * cols))
        self._set(est.location_, est.covariance_, (rows, cols), float(est.shrinkage_), n)
        return self

    def _set(self, mu, sigma, tile_shape, shrinkage, n_samples):
        self.mu_ = np.asarray(mu, dtype=np.float64)
        self.sigma_ = np.asarray(sigma, dtype=np.float64)
        self.tile_shape_ = (int(tile_shape[0]), int(tile_shape[1]))
        self.shrinkage_ = float(shrinkage)
        self.n_samples_ = int(n_samples)
        m = self.tile_shape_[0] * self.tile_shape_[1]
        if self.mu_.shape != (m,) or self.sigma_.shape != (m, m):
            raise ValueError(f"fitted tile {self.tile_shape_}: expected mu ({m},) and Sigma ({m}, {m}), "
                             f"found {self.mu_.shape} and {self.sigma_.shape}")
        self.__dict__.pop("captured_variance_", None)  # a refit must not keep the old value

    @functools.cached_property
    def captured_variance_(self) -> float:
        """Top-k eigenvalues of the fitted Sigma over its trace; computed when first asked (an eigh of
        the m x m tile), not on every load."""
        evals = np.sort(torch.linalg.eigvalsh(torch.from_numpy(self.sigma_)).numpy())[::-1]
        k = min(self.k, self.sigma_.shape[0])
        return float(evals[:k].sum() / evals.sum()) if evals.sum() > 0 else 1.0

    @classmethod
    def from_arrays(cls, mu, sigma, tile_shape, estimator="ledoitwolf", shrinkage=float("nan"),
                    n_samples=0, k=10, name="fitted") -> "FittedTile":
        """A fitted tile from stored arrays (used when loading a saved profile)."""

        obj = cls(estimator=estimator, k=k, name=name)
        sigma, _ = check_covariance(sigma, what="fitted Sigma")
        obj._set(check_mean(mu, sigma.shape[0]), sigma, tile_shape, shrinkage, n_samples)
        return obj

    def block(self, rows: int, cols: int) -> DenseBlock:
        """The block of a tile with rows x cols used cells: mu and Sigma of those cells (row-major
        index r * C + c of the fitted tile), the whole fit for a full tile, a sub-block for an edge one."""
        C = self.tile_shape_[1]
        cells = (np.arange(rows)[:, None] * C + np.arange(cols)[None, :]).reshape(-1)
        return DenseBlock(self.mu_[cells], self.sigma_[np.ix_(cells, cells)])

    def is_fitted(self) -> bool:
        return hasattr(self, "sigma_")

    def report(self) -> dict:
        if not self.is_fitted():
            raise ValueError("FittedTile is not fitted yet: call fit(maps) first")
        return {
            "estimator": self.estimator,
            "tile_shape": list(self.tile_shape_),
            "n_samples": self.n_samples_,
            "shrinkage": self.shrinkage_,
            "k": self.k,
            "captured_variance": self.captured_variance_,
            "mean_std": float(np.sqrt(np.diag(self.sigma_)).mean()),
        }

    def __repr__(self) -> str:
        if not self.is_fitted():
            return f"FittedTile(estimator={self.estimator!r}, k={self.k}, name={self.name!r})"
        return (f"FittedTile(name={self.name!r}, tile={self.tile_shape_}, n_samples={self.n_samples_}, "
                f"shrinkage={self.shrinkage_:.3g})")


def fit_file(path, estimator: str = "ledoitwolf", k: int = 10, name: str | None = None) -> FittedTile:
    """Fit a tile from a measurement file (.npz or .csv)."""
    return FittedTile(estimator=estimator, k=k, name=name or Path(path).stem).fit(load_maps(path))
