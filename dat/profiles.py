"""NoiseProfile: a device bound to a model's noise targets, N(mu, Sigma) over eta (length n).

Parametric and fitted devices give a block-diagonal Sigma, one block per crossbar tile. Full
tiles of a layer are identical and edge tiles differ only in shape, so every quantity is computed
once per distinct tile shape and repeated: Sigma is never formed densely unless `dense()` is asked.
- matvec: per tile through reshapes (Kr X Kc etc. for the crossbar model);
- full sampling: exact per tile (structured square roots, or a Cholesky of the fitted tile);
- top-k eigenpairs: per tile shape (dense eigh for small tiles, Lanczos otherwise), merged over
  tiles with multiplicity; each eigenvector lives on one tile.
A dense device (`DenseDevice`) is one n x n block: Cholesky for full sampling, eigh / Lanczos.

Precision: mean, variance, matvec, dense and eig are float64; samples are float32.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import scipy.sparse.linalg as spla
import torch

from dat.devices import CROSSBAR_UNITS, CrossbarParams, DenseDevice
from dat.measure import FittedTile
from dat.targets import Targets

SMALL_TILE = 1024  # up to this many cells a tile's eigenpairs come from a dense eigh
DENSE_LIMIT = 20_000  # dense() refuses larger n unless asked (20,000^2 float64 = 3.2 GB)
# Relative jitters tried, in turn, when a PSD but singular Sigma has no Cholesky factor.
JITTERS = (0.0, 1e-12, 1e-10, 1e-8)


def _check_k(k, n) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, found {type(k).__name__}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and n = {n}, found k = {k}")
    return int(k)


def _sign_fix(vecs: np.ndarray) -> np.ndarray:
    """Make each eigenvector's largest-magnitude entry positive, so results are reproducible."""
    idx = np.argmax(np.abs(vecs), axis=0)
    signs = np.sign(vecs[idx, np.arange(vecs.shape[1])])
    signs[signs == 0] = 1.0
    return vecs * signs


def _top_eig_operator(matvec, m: int, k: int, dense=None):
    """Top-k eigenpairs of a symmetric PSD operator of size m, descending."""
    if m <= SMALL_TILE or k >= m // 2:
        mat = dense() if dense is not None else matvec(np.eye(m))
        vals, vecs = (x.numpy() for x in torch.linalg.eigh(torch.as_tensor(mat, dtype=torch.float64)))
        vals, vecs = vals[::-1][:k], vecs[:, ::-1][:, :k]
    else:
        op = spla.LinearOperator((m, m), matvec=matvec, matmat=matvec, dtype=np.float64)
        # Fixed start vector: eigsh is otherwise seeded from a global RNG.
        v0 = np.random.default_rng(0).standard_normal(m)
        vals, vecs = spla.eigsh(op, k=k, which="LA", v0=v0, tol=1e-10)
        order = np.argsort(vals)[::-1]
        vals, vecs = vals[order], vecs[:, order]
    return np.clip(vals, 0.0, None), _sign_fix(np.ascontiguousarray(vecs))


def _cholesky(sigma: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cholesky factor of a PSD matrix; a singular one gets the smallest jitter of JITTERS times
    mean(diag) that makes it PD (the added variance is at most 1e-8 of the average variance)."""
    scale = float(sigma.diagonal().mean()) if sigma.numel() else 1.0
    eye = torch.eye(sigma.shape[0], dtype=sigma.dtype)
    for jit in JITTERS:
        L, info = torch.linalg.cholesky_ex(sigma + (jit * scale) * eye if jit else sigma)
        if int(info) == 0:
            return L, jit * scale
    raise ValueError(
        f"Sigma is not positive definite even with jitter {JITTERS[-1]:g} x mean variance: "
        "use the low-rank sampler or repair the matrix"
    )


class _CrossbarBlock:
    """One tile shape of the parametric crossbar model (see dat.devices for the formula)."""

    def __init__(self, params: CrossbarParams, rows: int, cols: int, tile_shape):
        self.rows, self.cols, self.m = rows, cols, rows * cols
        self.s = params.stds()
        self.Kr = torch.from_numpy(params.kernel_1d(rows))
        self.Kc = torch.from_numpy(params.kernel_1d(cols))
        self.mu = torch.from_numpy(params.tile_mean(rows, cols, tile_shape))
        self._roots = None

    def variance(self):
        s = self.s
        v = s["spatial"] ** 2 + s["row"] ** 2 + s["col"] ** 2 + s["tile"] ** 2 + s["prog"] ** 2
        return torch.full((self.m,), v, dtype=torch.float64)

    def matvec(self, X: torch.Tensor) -> torch.Tensor:
        """X [B, m, k] -> Sigma_tile X for each of the B tiles, without forming Sigma_tile."""
        B, _, k = X.shape
        X4 = X.reshape(B, self.rows, self.cols, k)
        s = self.s
        out = s["prog"] ** 2 * X4
        if s["spatial"]:  # (Kr (x) Kc) vec(X) = vec(Kr X Kc^T) with row-major cells
            out = out + s["spatial"] ** 2 * torch.einsum("ij,bjlk,ml->bimk", self.Kr, X4, self.Kc)
        if s["row"]:  # cells on one word line share a value: sum over the columns of that row
            out = out + s["row"] ** 2 * X4.sum(2, keepdim=True)
        if s["col"]:
            out = out + s["col"] ** 2 * X4.sum(1, keepdim=True)
        if s["tile"]:
            out = out + s["tile"] ** 2 * X4.sum((1, 2), keepdim=True)
        return out.reshape(B, self.m, k)

    def dense(self) -> torch.Tensor:
        s, R, C = self.s, self.rows, self.cols
        eye_r, eye_c = torch.eye(R, dtype=torch.float64), torch.eye(C, dtype=torch.float64)
        one_r, one_c = torch.ones(R, R, dtype=torch.float64), torch.ones(C, C, dtype=torch.float64)
        return (
            s["spatial"] ** 2 * torch.kron(self.Kr, self.Kc)
            + s["row"] ** 2 * torch.kron(eye_r, one_c)
            + s["col"] ** 2 * torch.kron(one_r, eye_c)
            + s["tile"] ** 2 * torch.ones(self.m, self.m, dtype=torch.float64)
            + s["prog"] ** 2 * torch.eye(self.m, dtype=torch.float64)
        )

    def _square_roots(self):
        # Symmetric square roots of the kernel factors (negative round-off eigenvalues clipped):
        # Rr Z Rc^T with Z standard normal has covariance Kr (x) Kc exactly.
        if self._roots is None:
            roots = []
            for K in (self.Kr, self.Kc):
                vals, vecs = torch.linalg.eigh(K)
                roots.append(((vecs * vals.clamp(min=0).sqrt()) @ vecs.T).float())
            self._roots = tuple(roots)
        return self._roots

    def sample(self, num: int, generator: torch.Generator) -> torch.Tensor:
        """num zero-mean draws [num, m] (float32), exact."""
        s, R, C = self.s, self.rows, self.cols
        dev = generator.device
        out = torch.zeros(num, R, C, device=dev)
        if s["spatial"]:
            Rr, Rc = (x.to(dev) for x in self._square_roots())
            Z = torch.randn(num, R, C, generator=generator, device=dev)
            out += s["spatial"] * (Rr @ Z @ Rc.T)
        if s["row"]:
            out += s["row"] * torch.randn(num, R, 1, generator=generator, device=dev)
        if s["col"]:
            out += s["col"] * torch.randn(num, 1, C, generator=generator, device=dev)
        if s["tile"]:
            out += s["tile"] * torch.randn(num, 1, 1, generator=generator, device=dev)
        if s["prog"]:
            out += s["prog"] * torch.randn(num, R, C, generator=generator, device=dev)
        return out.reshape(num, self.m)

    def top_eig(self, k: int):
        def mv(x):
            x2 = torch.from_numpy(np.asarray(x, dtype=np.float64).reshape(self.m, -1))
            return self.matvec(x2[None])[0].numpy().reshape(np.shape(x))

        return _top_eig_operator(mv, self.m, k, dense=lambda: self.dense().numpy())


class _DenseBlock:
    """A tile (or a whole profile) given by an explicit mean and covariance."""

    def __init__(self, mu, sigma):
        self.mu = torch.as_tensor(mu, dtype=torch.float64)
        self.sigma = torch.as_tensor(sigma, dtype=torch.float64)
        self.m = self.sigma.shape[0]
        self._L = None
        self.jitter = None

    def variance(self):
        return self.sigma.diagonal().clone()

    def matvec(self, X):
        return self.sigma @ X

    def dense(self):
        return self.sigma.clone()

    def cholesky(self):
        if self._L is None:
            L, self.jitter = _cholesky(self.sigma)
            self._L = L.float()
        return self._L

    def sample(self, num, generator):
        L = self.cholesky().to(generator.device)
        Z = torch.randn(num, self.m, generator=generator, device=generator.device)
        return Z @ L.T

    def top_eig(self, k):
        s = self.sigma.numpy()
        return _top_eig_operator(lambda x: s @ x, self.m, k, dense=lambda: s)


SAMPLING_METHODS = ("low-rank", "full", "cholesky")


class Sampler:
    """Draws eta [num, n] (float32) from a profile.

    - "low-rank": eta = mu + A_k z, A_k = V_k D_k^(1/2) (the paper's DAT-Fast);
    - "full": exact, using the profile's structure (per-tile square roots, no n x n matrix);
    - "cholesky": exact, eta = mu + L z with the Cholesky factor L of the dense Sigma, exactly as
      the paper's DAT-Full (O(n^3) set-up, O(n^2) per draw, n x n memory); refused above max_n.
    """

    def __init__(self, profile: "NoiseProfile", method: str, k: int, max_n: int = DENSE_LIMIT):
        self.profile, self.method, self.k = profile, method, k
        self.mu = profile.mean().float()
        self._on_device = {}
        if method == "low-rank":
            vals, vecs = profile.eig(k)
            # A_k = V_k D_k^(1/2): eta = mu + A_k z has covariance V_k D_k V_k^T.
            self.A = (vecs * vals.sqrt()).float()
        elif method == "cholesky":
            # L L^T = Sigma; eta = mu + L z with z ~ N(0, I_n). The same code path as A_k, with k = n.
            self.A = profile._cholesky_factor(max_n)
            self.k = profile.n
        else:
            self.A = None
            profile._prepare_full()

    def sample(self, num: int, generator: torch.Generator) -> torch.Tensor:
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be a positive int, found {num!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, found {type(generator).__name__}")
        dev = generator.device
        if dev not in self._on_device:  # copy mu and A_k once per device, not once per draw
            self._on_device[dev] = (self.mu.to(dev), None if self.A is None else self.A.to(dev))
        mu, A = self._on_device[dev]
        if A is not None:
            z = torch.randn(num, self.k, generator=generator, device=dev)
            return mu + z @ A.T
        return mu + self.profile._sample_centered(num, generator)

    def __repr__(self) -> str:
        return f"Sampler(method={self.method!r}, k={self.k}, n={self.profile.n})"


class NoiseProfile:
    """N(mu, Sigma) over a model's noise targets (see module docstring)."""

    kind = "abstract"

    def __init__(self, device, targets: Targets, name: str):
        self.device, self.targets, self.name = device, targets, name
        self._eig_cache = None
        self._hash = None

    # -- subclass interface ----------------------------------------------------------------
    def mean(self) -> torch.Tensor: ...
    def variance(self) -> torch.Tensor: ...
    def matvec(self, x: torch.Tensor) -> torch.Tensor: ...
    def _dense(self) -> torch.Tensor: ...
    def _eig(self, k: int): ...
    def _prepare_full(self): ...
    def _sample_centered(self, num, generator) -> torch.Tensor: ...
    def _hash_arrays(self) -> list[np.ndarray]: ...
    def _device_dict(self) -> dict: ...

    # -- shared -----------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.targets.n

    def trace(self) -> float:
        return float(self.variance().sum())

    def _check_x(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, found {type(x).__name__}")
        if x.ndim not in (1, 2) or x.shape[0] != self.n:
            raise ValueError(f"x must have shape [{self.n}] or [{self.n}, m], found {tuple(x.shape)}")

    def _check_dense_size(self, max_n: int) -> None:
        if self.n > max_n:
            raise ValueError(f"dense Sigma of n = {self.n} exceeds max_n = {max_n}; pass a larger max_n to force it")

    def dense(self, max_n: int = DENSE_LIMIT) -> torch.Tensor:
        """The n x n Sigma (float64), formed only on request; refused above max_n."""
        self._check_dense_size(max_n)
        return self._dense()

    def _cholesky_factor(self, max_n: int = DENSE_LIMIT) -> torch.Tensor:
        """L (float32) with L L^T = Sigma, from the dense Sigma (refused above max_n)."""
        return _cholesky(self.dense(max_n=max_n))[0].float()

    def eig(self, k: int):
        """Top-k eigenpairs of Sigma: values [k] descending, vectors [n, k] (float64)."""
        k = _check_k(k, self.n)
        if self._eig_cache is None or self._eig_cache[0].shape[0] < k:
            self._eig_cache = self._eig(k)
        vals, vecs = self._eig_cache
        return vals[:k].clone(), vecs[:, :k].clone()

    def captured_variance(self, k: int) -> float:
        """sum of the top-k eigenvalues / trace(Sigma)."""
        tr = self.trace()
        return float(self.eig(k)[0].sum() / tr) if tr > 0 else 1.0

    def spectrum(self, k_max: int = 50) -> dict:
        """Top eigenvalues and the cumulative captured variance (k_max capped at n), JSON-able."""
        k = _check_k(min(k_max, self.n) if isinstance(k_max, int) and k_max >= 1 else k_max, self.n)
        vals = self.eig(k)[0]
        tr = self.trace()
        cum = (vals.cumsum(0) / tr) if tr > 0 else torch.ones_like(vals)
        return {"k": list(range(1, k + 1)), "eigenvalues": vals.tolist(),
                "captured_variance": cum.tolist(), "trace": tr}

    def sampler(self, method: str = "low-rank", k: int = 10, max_n: int = DENSE_LIMIT) -> Sampler:
        """A sampler of eta; see `Sampler` for the methods. max_n caps the dense "cholesky" path."""
        if method not in SAMPLING_METHODS:
            raise ValueError(f"method must be one of {SAMPLING_METHODS}, found {method!r}")
        return Sampler(self, method, _check_k(k, self.n) if method == "low-rank" else 0, max_n=max_n)

    def content_hash(self) -> str:
        """sha256 of the device description, the arrays that define it and the targets."""
        if self._hash is None:
            h = hashlib.sha256()
            h.update(json.dumps({"kind": self.kind, "device": self._device_dict(),
                                 "targets": self.targets.describe()}, sort_keys=True).encode())
            for a in self._hash_arrays():
                h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
            self._hash = h.hexdigest()
        return self._hash

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, kind={self.kind!r}, n={self.n})"


class BlockProfile(NoiseProfile):
    """Block-diagonal Sigma over the targets' tiles, one block model per distinct tile shape."""

    def __init__(self, device, targets, name, kind, make_block):
        super().__init__(device, targets, name)
        self.kind = kind
        groups: dict[tuple[int, int], list[int]] = {}
        for t in targets.tiles():
            groups.setdefault((t.rows, t.cols), []).append(t.offset)
        self.groups = []
        for (rows, cols), offsets in groups.items():
            block = make_block(rows, cols)
            idx = torch.tensor(offsets)[:, None] + torch.arange(rows * cols)[None, :]
            self.groups.append((block, idx))

    def mean(self):
        out = torch.empty(self.n, dtype=torch.float64)
        for block, idx in self.groups:
            out[idx] = block.mu.expand(idx.shape[0], -1)
        return out

    def variance(self):
        out = torch.empty(self.n, dtype=torch.float64)
        for block, idx in self.groups:
            out[idx] = block.variance().expand(idx.shape[0], -1)
        return out

    def matvec(self, x):
        self._check_x(x)
        X = x.to(torch.float64).reshape(self.n, -1)
        out = torch.empty_like(X)
        for block, idx in self.groups:
            out[idx] = block.matvec(X[idx])
        return out.reshape(x.shape)

    def _dense(self):
        out = torch.zeros(self.n, self.n, dtype=torch.float64)
        for block, idx in self.groups:
            d = block.dense()
            for row in idx:
                out[row[:, None], row[None, :]] = d
        return out

    def _eig(self, k):
        cands, per_group = [], []
        for g, (block, idx) in enumerate(self.groups):
            vals, vecs = block.top_eig(min(k, block.m))
            per_group.append(vecs)
            # identical tiles repeat each eigenvalue once per tile, eigenvector on that tile
            cands += [(-v, g, t, j) for j, v in enumerate(vals) for t in range(idx.shape[0])]
        cands.sort()  # by value descending, ties in (group, tile, index) order: deterministic
        top = cands[:k]
        values = torch.tensor([-c[0] for c in top], dtype=torch.float64)
        vectors = torch.zeros(self.n, k, dtype=torch.float64)
        for col, (_, g, t, j) in enumerate(top):
            vectors[self.groups[g][1][t], col] = torch.from_numpy(per_group[g][:, j].copy())
        return values, vectors

    def _prepare_full(self):
        for block, _ in self.groups:
            if isinstance(block, _DenseBlock):
                block.cholesky()

    def _sample_centered(self, num, generator):
        out = torch.empty(num, self.n, device=generator.device)
        for block, idx in self.groups:
            T = idx.shape[0]
            draws = block.sample(num * T, generator).reshape(num, T * block.m)
            out[:, idx.reshape(-1).to(generator.device)] = draws
        return out

    def _hash_arrays(self):
        if isinstance(self.device, FittedTile):
            return [self.device.mu_, self.device.sigma_]
        return []

    def _device_dict(self):
        if isinstance(self.device, CrossbarParams):
            return {"type": "crossbar", "params": self.device.to_dict(), "units": CROSSBAR_UNITS}
        d = self.device
        return {"type": "fitted", "estimator": d.estimator, "tile_shape": list(d.tile_shape_),
                "shrinkage": d.shrinkage_, "n_samples": d.n_samples_, "k": d.k}


class DenseProfile(NoiseProfile):
    """One n x n Sigma given explicitly (`DenseDevice`)."""

    kind = "dense"

    def __init__(self, device: DenseDevice, targets, name):
        super().__init__(device, targets, name)
        self.block = _DenseBlock(device.mu, device.sigma)

    def mean(self):
        return self.block.mu.clone()

    def variance(self):
        return self.block.variance()

    def matvec(self, x):
        self._check_x(x)
        return self.block.sigma @ x.to(torch.float64)

    def _dense(self):
        return self.block.dense()

    def _cholesky_factor(self, max_n: int = DENSE_LIMIT) -> torch.Tensor:
        self._check_dense_size(max_n)
        return self.block.cholesky()  # the factor the "full" sampler uses: computed once

    def _eig(self, k):
        vals, vecs = self.block.top_eig(k)
        return torch.from_numpy(vals.copy()), torch.from_numpy(vecs)

    def _prepare_full(self):
        self.block.cholesky()

    def _sample_centered(self, num, generator):
        return self.block.sample(num, generator)

    def _hash_arrays(self):
        return [self.device.mu, self.device.sigma]

    def _device_dict(self):
        return {"type": "dense", "repair": self.device.repair_report}


def bind(device, targets: Targets, name: str | None = None) -> NoiseProfile:
    """Bind a device (CrossbarParams, fitted FittedTile, DenseDevice) to a model's targets."""
    if not isinstance(targets, Targets):
        raise TypeError(f"targets must be dat.targets.Targets, found {type(targets).__name__}")
    if isinstance(device, CrossbarParams):
        return BlockProfile(device, targets, name or device.name, "crossbar",
                            lambda r, c: _CrossbarBlock(device, r, c, targets.tile_shape))
    if isinstance(device, FittedTile):
        if not device.is_fitted():
            raise ValueError("FittedTile is not fitted yet: call fit(maps) first")
        if tuple(targets.tile_shape) != device.tile_shape_:
            raise ValueError(
                f"the fitted tile is {device.tile_shape_[0]} x {device.tile_shape_[1]} but the targets use "
                f"{targets.tile_shape[0]} x {targets.tile_shape[1]} tiles: build the targets with "
                f"tile={device.tile_shape_}"
            )
        C = device.tile_shape_[1]

        def fitted_block(r, c):
            # a partial edge tile uses the sub-block of its cells (row-major index r * C + c)
            cells = (np.arange(r)[:, None] * C + np.arange(c)[None, :]).reshape(-1)
            return _DenseBlock(device.mu_[cells], device.sigma_[np.ix_(cells, cells)])

        return BlockProfile(device, targets, name or device.name, "fitted", fitted_block)
    if isinstance(device, DenseDevice):
        if device.n != targets.n:
            raise ValueError(f"the dense device has n = {device.n} but the targets have n = {targets.n}")
        return DenseProfile(device, targets, name or device.name)
    raise TypeError(f"device must be CrossbarParams, FittedTile or DenseDevice, found {type(device).__name__}")
