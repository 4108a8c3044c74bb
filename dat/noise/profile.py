"""NoiseProfile: a device bound to a model's noise targets, N(mu, Sigma) over eta (length n).

Sigma is block-diagonal. A parametric or fitted device gives one block per crossbar tile; full
tiles of a layer are identical and edge tiles differ only in shape, so every quantity is computed
once per distinct tile shape and repeated: Sigma is never formed densely unless `dense()` is asked.
A dense device (`DenseDevice`) is the special case of one block over the whole of eta.
- matvec: per block (Kr X Kc etc. for the crossbar block, `dat.noise.crossbar`; Sigma X for a dense one);
- full sampling: exact per block (structured square roots, or a Cholesky of a dense block);
- top-k eigenpairs: per block shape (dense eigh for small blocks, Lanczos otherwise, `dat.noise.linalg`),
  merged over tiles with multiplicity; each eigenvector lives on one tile.
The "cholesky" sampler (DAT-Full) factors the dense Sigma of any profile; `cholesky_factor` can
keep that factor on disk, and `DrawBank` makes its O(n^2) draws in batches (one GEMM for many).

Precision: mean, variance, matvec, dense and eig are float64; samples are float32.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from dat import diskcache
from dat.errors import UserError
from dat.fileio import atomic_write
from dat.noise import linalg
from dat.noise.crossbar import CROSSBAR_UNITS, CrossbarParams
from dat.noise.crossbar_block import CrossbarBlock
from dat.noise.dense import DenseBlock, DenseDevice
from dat.noise.fitted import FittedTile
from dat.noise.targets import Targets

DENSE_LIMIT = 20_000  # dense() refuses larger n unless asked (20,000^2 float64 = 3.2 GB)


# -- the Cholesky factor on disk ------------------------------------------------------------------
CHOLESKY_CACHE_FORMAT = 1
# A cached factor must reproduce Sigma x within this relative error on random probes: float32
# round-off gives about 1e-6; a factor of another matrix or a damaged file gives order 1.
CACHE_PROBE_TOL = 1e-3


def cholesky_cache_key(profile: "NoiseProfile") -> str:
    """What a cached factor must match: the profile's content hash (device and targets), n, the
    factor's dtype, the jitter ladder and the torch version."""
    desc = {"format": CHOLESKY_CACHE_FORMAT, "profile": profile.content_hash(), "n": profile.n,
            "dtype": "float32", "jitters": list(linalg.JITTERS), "torch": torch.__version__}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


def cholesky_cache_path(profile: "NoiseProfile", cache_dir) -> Path:
    return Path(cache_dir) / f"cholesky-{cholesky_cache_key(profile)[:32]}.safetensors"


def _probe_factor(profile: "NoiseProfile", L: torch.Tensor, jitter: float) -> float:
    """max relative error of L L^T x against (Sigma + jitter I) x over two fixed random probes x."""
    x = torch.randn(profile.n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = profile.matvec(x) + jitter * x
    got = (L @ (L.T @ x.float())).double()
    return float(((got - want).norm(dim=0) / want.norm(dim=0).clamp(min=1e-300)).max())


def _read_factor(profile: "NoiseProfile", path: Path):
    """(L, jitter) from a cache file, or None (with a warning) when the file does not match."""
    key, n = cholesky_cache_key(profile), profile.n
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                raise ValueError(f"expected key {key[:16]}..., found {str(meta.get('key'))[:16]}...")
            if list(f.keys()) != ["L"]:
                raise ValueError(f"expected one tensor 'L', found {list(f.keys())}")
            L = f.get_tensor("L")
        jitter = float(meta["jitter"])
        if L.dtype != torch.float32 or tuple(L.shape) != (n, n):
            raise ValueError(f"expected a float32 [{n}, {n}] factor, found {L.dtype} {list(L.shape)}")
        err = _probe_factor(profile, L, jitter)
        if not err <= CACHE_PROBE_TOL:  # also false for NaN
            raise ValueError(f"expected L L^T x = Sigma x within {CACHE_PROBE_TOL:g}, found relative error {err:.3g}")
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:
        warnings.warn(f"ignoring the cached Cholesky factor {path} ({err}); computing it again", stacklevel=3)
        return None
    return L, jitter


def cholesky_factor(profile: "NoiseProfile", max_n: int = DENSE_LIMIT, cache_dir=None):
    """(L, jitter, source): the float32 Cholesky factor of the profile's dense Sigma (refused above
    max_n). With ``cache_dir``, a factor cached there for this profile (same content hash, n, dtype,
    torch version) is read instead of computed, after checking its key, shape and that it
    reproduces Sigma on random probes; a missing or damaged file is (re)computed and written
    atomically. source is "computed" or "cache". The folder is kept under ``dat.diskcache``'s cap
    (8 GiB, ``$DAT_CHOLESKY_CACHE_MAX``), the least recently used factors removed first."""
    profile._check_dense_size(max_n)
    path = None if cache_dir is None else cholesky_cache_path(profile, cache_dir)
    cap = None if path is None else diskcache.cholesky_cap()  # a bad setting fails before the set-up
    if path is not None and path.exists():
        found = _read_factor(profile, path)
        if found is not None:
            diskcache.touch(path)  # recently used: the last the size cap removes
            profile._adopt_factor(*found)
            return found[0], found[1], "cache"
    L, jitter = profile._factor()
    if path is not None:
        meta = {"key": cholesky_cache_key(profile), "profile_hash": profile.content_hash(), "n": str(profile.n),
                "jitter": repr(float(jitter)), "torch": torch.__version__}
        try:
            atomic_write(path, lambda tmp: save_file({"L": L.contiguous()}, tmp, metadata=meta))
        except OSError as err:  # a full or read-only disk costs the next run its set-up, nothing more
            warnings.warn(f"could not write the Cholesky factor to {path} ({err}); it is not cached", stacklevel=3)
        else:  # the cache stays under its cap (dat.diskcache): least recently used factors go first
            diskcache.prune(path.parent, cap, diskcache.CHOLESKY_PATTERN, keep=(path,))
    return L, jitter, "computed"



class _ProjectedBlock:
    """A tile of the classifier layer seen by the loss: Sigma' = P Sigma P with P = I_rows (x)
    (I_cols - 11^T / cols) on row-major cells, i.e. each input's (word line's) perturbation minus
    its mean over the outputs (bit lines), which shifts all logits of an input equally and leaves
    cross-entropy unchanged. Valid when the tile holds every output of the layer."""

    def __init__(self, base, rows: int, cols: int):
        self.base, self.rows, self.cols, self.m = base, rows, cols, rows * cols
        self.mu = self.project(base.mu[None, :, None])[0, :, 0]

    def project(self, X: torch.Tensor) -> torch.Tensor:
        """P X for X [B, m, k]."""
        X4 = X.reshape(X.shape[0], self.rows, self.cols, X.shape[-1])
        return (X4 - X4.mean(2, keepdim=True)).reshape(X.shape)

    def matvec(self, X):
        return self.project(self.base.matvec(self.project(X)))

    def dense(self):
        D = self.base.dense()
        D = self.project(D[None])[0]                 # P Sigma
        return self.project(D.T.contiguous()[None])[0].T  # (P (P Sigma)^T)^T = P Sigma P

    def trace(self) -> float:
        # tr(P Sigma P) = tr(Sigma) - (1/cols) sum_r 1_r^T Sigma 1_r, 1_r the cells of word line r
        X = torch.zeros(1, self.m, self.rows, dtype=torch.float64)
        X[0, torch.arange(self.m), torch.arange(self.m) // self.cols] = 1.0
        SX = self.base.matvec(X)
        return float(self.base.variance().sum()) - float((X * SX).sum()) / self.cols

    def top_eig(self, k):
        def mv(x):
            x2 = torch.from_numpy(np.asarray(x, dtype=np.float64).reshape(self.m, -1))
            return self.matvec(x2[None])[0].numpy().reshape(np.shape(x))

        return linalg.top_eig(mv, self.m, k, dense=lambda: self.dense().numpy(),
                              store=self.__dict__.setdefault("_eig_store", {}))


def _block_trace(block) -> float:
    return block.trace() if isinstance(block, _ProjectedBlock) else float(block.variance().sum())


LOWRANK_MODES = ("plain", "relevant")


@dataclass
class LowRank:
    """The low-rank factor of a profile: the top eigenpairs of Sigma ("plain", the paper's A_k) or
    of the loss-relevant Sigma' = P Sigma P ("relevant", this project's extension; P removes, on the
    classifier layer, perturbations equal on every output for a given input).

    Ties: every eigenvalue within TIE_RTOL x (largest, `dat.noise.linalg`) of the k-th is kept, so k_used >= k and the
    factor does not depend on how a solver orders a tied group (for identical tiles: every tile's
    copy is kept, none preferred by position). Vectors are canonical (`dat.noise.linalg.canonical_basis`).
    `mean` is mu ("plain") or P mu ("relevant"). Captured fractions are over the kept k_used pairs:
    captured_variance = (variance the factor carries) / trace(Sigma); captured_relevant_variance =
    ||P A||_F^2 / trace(Sigma'), the part of the loss-relevant variance the factor carries."""

    mode: str
    k: int
    k_used: int
    values: torch.Tensor
    vectors: torch.Tensor
    mean: torch.Tensor
    tie: dict | None
    captured_variance: float
    captured_relevant_variance: float

    def factor(self) -> torch.Tensor:
        """A = V D^(1/2) [n, k_used] (float64): eta = mean + A z has covariance V D V^T."""
        return self.vectors * self.values.sqrt()

    def report(self) -> dict:
        return {"mode": self.mode, "k": self.k, "k_used": self.k_used, "tie": self.tie,
                "captured_variance": self.captured_variance,
                "captured_relevant_variance": self.captured_relevant_variance}


def _tie_report(vals: torch.Tensor, k: int, k_used: int, tol: float) -> dict | None:
    """The tied group holding the k-th eigenvalue (1-based first/last), or None when it is alone."""
    vk = float(vals[k - 1])
    first = int((vals > vk + tol).sum()) + 1
    if first == k_used:
        return None
    return {"value": vk, "first": first, "last": k_used, "size": k_used - first + 1, "rtol": linalg.TIE_RTOL}


SAMPLING_METHODS = ("low-rank", "full", "cholesky")


class Sampler:
    """Draws eta [num, n] (float32) from a profile.

    - "low-rank": eta = mu + A_k z, A_k = V_k D_k^(1/2) (the paper's DAT-Fast);
    - "full": exact, using the profile's structure (per-tile square roots, no n x n matrix);
    - "cholesky": exact, eta = mu + L z with the Cholesky factor L of the dense Sigma, exactly as
      the paper's DAT-Full (O(n^3) set-up, O(n^2) per draw, n x n memory); refused above max_n.
      With ``cache_dir`` the factor is kept on disk (see `cholesky_factor`); ``source`` says
      whether it was "computed" or read from the "cache". Its draws are best made many at a time
      (one GEMM for B draws instead of B matrix-vector products): ``bank_size`` is the number a
      `DrawBank` makes at once (1 for the other methods, whose draws cost little).
    """

    def __init__(self, profile: "NoiseProfile", method: str, k: int, max_n: int = DENSE_LIMIT,
                 lowrank: str = "plain", cache_dir=None):
        self.profile, self.method, self.k = profile, method, k
        self.mu = profile.mean().float()
        self._on_device = {}
        self.lowrank = None  # the LowRank report (k_used, ties, captured fractions) for "low-rank"
        self.bank_size, self.jitter, self.source = 1, 0.0, "computed"
        if method == "low-rank":
            # A_k = V_k D_k^(1/2): eta = mu + A_k z has covariance V_k D_k V_k^T. A tied group at
            # the k-th eigenvalue is kept whole (k_used >= k); "relevant" uses Sigma' and P mu.
            self.lowrank = profile.lowrank(k, mode=lowrank)
            self.mu = self.lowrank.mean.float()
            self.A = self.lowrank.factor().float()
            self.k = self.lowrank.k_used
        elif method == "cholesky":
            # L L^T = Sigma; eta = mu + L z with z ~ N(0, I_n). The same code path as A_k, with k = n.
            self.A, self.jitter, self.source = cholesky_factor(profile, max_n, cache_dir)
            self.k = profile.n
            self.bank_size = DEFAULT_BANK_SIZE
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
            return mu + (linalg.lower_matmul(z, A) if self.method == "cholesky" else z @ A.T)
        return mu + self.profile._sample_centered(num, generator)

    def __repr__(self) -> str:
        mode = f", lowrank={self.lowrank.mode!r}" if self.lowrank is not None else ""
        return f"Sampler(method={self.method!r}, k={self.k}{mode}, n={self.profile.n})"


# Exact dense draws made per GEMM: at n = 25,600 one draw alone (a matrix-vector product reading all
# of L) costs as much as 5-12 draws inside a batch of 128 (measured), and a bank of 128 is 13 MB there.
DEFAULT_BANK_SIZE = 128


class DrawBank:
    """Draws of a sampler made ``size`` at a time and handed out in order, for samplers whose draws
    are far cheaper in a batch (eta = mu + Z L^T for a [size, n] block Z in one GEMM). The draws
    have the sampler's distribution and come from the caller's generator, so they are as seeded as
    the sampler's own. Its state (the generator's state when the current bank was drawn and the
    position in it) is all a resume needs: `load_state_dict` draws the same bank again.
    """

    def __init__(self, sampler: Sampler, size: int = DEFAULT_BANK_SIZE):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int (draws per bank), found {size!r}")
        self.sampler, self.size = sampler, size
        self._draws, self._position, self._start, self._generator = None, size, None, None

    def _refill(self, generator: torch.Generator) -> None:
        self._start = generator.get_state()  # enough to draw this bank again
        self._draws = self.sampler.sample(self.size, generator)
        self._position, self._generator = 0, generator

    def sample(self, num: int, generator: torch.Generator) -> torch.Tensor:
        """The next num draws [num, n] (a new bank is drawn from ``generator`` when this one runs out)."""
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be a positive int, found {num!r}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, found {type(generator).__name__}")
        if generator is not self._generator:  # a bank belongs to the generator that drew it
            self._draws, self._position = None, self.size
        parts = []
        while num > 0:
            if self._position == self.size:
                self._refill(generator)
            take = min(num, self.size - self._position)
            parts.append(self._draws[self._position:self._position + take].clone())
            self._position += take
            num -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict:
        """{"size", "position", "generator_state"} (ints and a uint8 tensor: torch.load(weights_only=True)
        reads it); an empty generator_state means no bank has been drawn yet."""
        start = self._start if self._draws is not None else torch.empty(0, dtype=torch.uint8)
        return {"size": self.size, "position": self._position, "generator_state": start.clone()}

    def load_state_dict(self, state: dict, generator: torch.Generator) -> None:
        """Continue from ``state``: the bank is drawn again from its saved generator state (which
        leaves ``generator`` where the original draw left it) and the position restored."""
        if not isinstance(state, dict) or set(state) != {"size", "position", "generator_state"}:
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"expected a draw bank state with size, position, generator_state; found {found}")
        if int(state["size"]) != self.size:
            raise ValueError(f"expected a draw bank of size {self.size}, found {int(state['size'])}")
        position = int(state["position"])
        if not 0 <= position <= self.size:
            raise ValueError(f"expected a bank position in [0, {self.size}], found {position}")
        start = state["generator_state"]
        if not isinstance(start, torch.Tensor) or start.dtype != torch.uint8:
            raise ValueError(f"expected generator_state as a uint8 tensor, found {type(start).__name__}")
        if start.numel() == 0:
            self._draws, self._position, self._start, self._generator = None, self.size, None, None
            return
        generator.set_state(start)
        self._refill(generator)
        self._position = position



class NoiseProfile:
    """N(mu, Sigma) over a model's noise targets: block-diagonal, one block model per distinct
    block shape, repeated over the blocks of that shape (see the module docstring). ``make_block(rows,
    cols)`` builds the block of a tile of rows x cols used cells; with ``whole=True`` it is called
    once, as ``make_block(None, None)``, for one block over the whole of eta (a dense device)."""

    def __init__(self, device, targets: Targets, name: str, kind: str, make_block, whole: bool = False):
        self.device, self.targets, self.name, self.kind = device, targets, name, kind
        self._eig_cache = {}  # mode -> (values, vectors) of the top list, ending at a tie boundary
        self._hash = None
        groups: dict[tuple[int, int], list[int]] = {}
        if whole:
            groups[(None, None)] = [0]
        else:
            for t in targets.tiles():
                groups.setdefault((t.rows, t.cols), []).append(t.offset)
        self.groups = []
        self._blocks = {}  # (rows, cols) -> block
        for (rows, cols), offsets in groups.items():
            block = self._blocks[(rows, cols)] = make_block(rows, cols)
            idx = torch.tensor(offsets)[:, None] + torch.arange(block.m)[None, :]
            self.groups.append((block, idx))
        # A dense device is one block over all of eta: its eigenpairs, factor and loss-relevant part
        # are the block's own (nothing to merge over tiles).
        self.whole = self.groups[0][0] if whole else None
        self._relevant_groups = None

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

    def _factor(self) -> tuple[torch.Tensor, float]:
        """(L float32, jitter) with L L^T = Sigma + jitter I, from the dense Sigma (see cholesky_factor);
        a dense device's is its block's, which its exact "full" sampler uses too."""
        if self.whole is not None:
            return self.whole.cholesky(), self.whole.jitter
        return linalg.cholesky(self._dense)

    def _adopt_factor(self, L: torch.Tensor, jitter: float) -> None:
        """A factor read from the disk cache: a dense device's "full" sampler reuses it (the
        structured exact samplers of tiles do not need it)."""
        if self.whole is not None:
            self.whole._L, self.whole.jitter = L, jitter

    def _top(self, k: int, mode: str = "plain"):
        """Top eigenpairs of Sigma (or Sigma'), at least k, ending at a tie-group boundary."""
        if mode not in LOWRANK_MODES:
            raise UserError(f"low-rank mode: expected one of {LOWRANK_MODES}, found {mode!r}")
        k = linalg.check_k(k, self.n)
        cached = self._eig_cache.get(mode)
        if cached is None or cached[0].shape[0] < k:
            cached = self._eig_cache[mode] = self._eig(k, mode)
        return cached

    def eig(self, k: int):
        """Top-k eigenpairs of Sigma: values [k] descending, vectors [n, k] (float64), canonical
        (see `LowRank`); inside a tied group cut at k, the order is (tile shape, tile, index)."""
        vals, vecs = self._top(k)
        return vals[:k].clone(), vecs[:, :k].clone()

    def captured_variance(self, k: int) -> float:
        """sum of the top-k eigenvalues / trace(Sigma)."""
        tr = self.trace()
        return float(self.eig(k)[0].sum() / tr) if tr > 0 else 1.0

    def project_relevant(self, x: torch.Tensor) -> torch.Tensor:
        """P x (x [n] or [n, m]): on the classifier layer (the last target layer, whose outputs
        are the logits) each input's values minus their mean over the outputs."""
        return self.targets.remove_output_means(x)

    def lowrank(self, k: int, mode: str = "plain") -> LowRank:
        """The rank-k factor ("plain": top-k of Sigma, the paper's DAT-Fast; "relevant": top-k of
        the loss-relevant Sigma' = P Sigma P, this project's extension), ties kept whole."""
        if mode == "relevant" and self.targets.layers[-1].cols < 2:
            raise UserError(f"loss-relevant low rank: expected a classifier layer with >= 2 outputs as the "
                            f"last target, found {self.targets.layers[-1].name!r} with "
                            f"{self.targets.layers[-1].cols} output")
        vals, vecs = self._top(k, mode)
        tr, tr_rel = self.trace(), self.relevant_trace()
        tol = linalg.TIE_RTOL * float(vals[0]) if vals.numel() else 0.0
        vk = float(vals[k - 1])
        k_used = int((vals >= vk - tol).sum())
        vals, vecs = vals[:k_used].clone(), vecs[:, :k_used].clone()
        carried = float(vals.sum())  # variance of the factor's draws: trace(V D V^T)
        if mode == "plain":
            rel = float((self.project_relevant(vecs) ** 2 * vals).sum())  # ||P A||_F^2
            mean = self.mean()
        else:
            rel, mean = carried, self._relevant_mean()
        return LowRank(mode, k, k_used, vals, vecs, mean, _tie_report(vals, k, k_used, tol),
                       carried / tr if tr > 0 else 1.0, rel / tr_rel if tr_rel > 0 else 1.0)

    def captured(self, k: int) -> dict:
        """Both factors' captured variance and captured loss-relevant variance at rank k."""
        return {"k": k, "trace": self.trace(), "relevant_trace": self.relevant_trace(),
                "plain": self.lowrank(k, "plain").report(), "relevant": self.lowrank(k, "relevant").report()}

    def spectrum(self, k_max: int = 50) -> dict:
        """Top eigenvalues and the cumulative captured variance (k_max capped at n), JSON-able."""
        k = linalg.check_k(min(k_max, self.n) if isinstance(k_max, int) and k_max >= 1 else k_max, self.n)
        vals = self.eig(k)[0]
        tr = self.trace()
        cum = (vals.cumsum(0) / tr) if tr > 0 else torch.ones_like(vals)
        return {"k": list(range(1, k + 1)), "eigenvalues": vals.tolist(),
                "captured_variance": cum.tolist(), "trace": tr}

    def sampler(self, method: str = "low-rank", k: int = 10, max_n: int = DENSE_LIMIT,
                lowrank: str = "plain", cache_dir=None) -> Sampler:
        """A sampler of eta; see `Sampler` for the methods. max_n caps the dense "cholesky" path;
        `lowrank` ("plain" or "relevant") chooses the low-rank factor (see `LowRank`); cache_dir
        (optional) keeps the Cholesky factor on disk between runs."""
        if method not in SAMPLING_METHODS:
            raise ValueError(f"method must be one of {SAMPLING_METHODS}, found {method!r}")
        if lowrank not in LOWRANK_MODES:
            raise UserError(f"low-rank mode: expected one of {LOWRANK_MODES}, found {lowrank!r}")
        return Sampler(self, method, linalg.check_k(k, self.n) if method == "low-rank" else 0, max_n=max_n,
                       lowrank=lowrank, cache_dir=cache_dir)

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
        return f"NoiseProfile(name={self.name!r}, kind={self.kind!r}, n={self.n})"

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

    def _groups(self, mode: str):
        if mode == "plain":
            return self.groups
        if self._relevant_groups is None and self.whole is not None:
            # P Sigma P over all of eta (P acts on the classifier layer's part), kept symmetric
            P, (block, idx) = self.project_relevant, self.groups[0]
            s = P(P(block.sigma).T.contiguous())
            self._relevant_groups = [(DenseBlock(P(block.mu), 0.5 * (s + s.T)), idx)]
        if self._relevant_groups is None:
            # Tiles of the classifier layer become P Sigma_tile P; P acts inside a tile only when
            # the tile holds all of the layer's outputs (one tile column).
            logit = self.targets.layers[-1]
            C = self.targets.tile_shape[1]
            if logit.cols > C:
                raise UserError(
                    f"loss-relevant low rank: expected the classifier's {logit.cols} outputs on one "
                    f"tile column (tile width >= {logit.cols}), found tile width {C}; use a wider tile")
            groups: dict[tuple[int, int, bool], list[int]] = {}
            for t in self.targets.tiles():
                groups.setdefault((t.rows, t.cols, t.layer == logit.name), []).append(t.offset)
            self._relevant_groups = []
            for (rows, cols, proj), offsets in groups.items():
                base = self._blocks[(rows, cols)]
                block = _ProjectedBlock(base, rows, cols) if proj else base
                idx = torch.tensor(offsets)[:, None] + torch.arange(rows * cols)[None, :]
                self._relevant_groups.append((block, idx))
        return self._relevant_groups

    def relevant_trace(self):
        """trace(Sigma') = trace(P Sigma P)."""
        if self.whole is not None:  # the diagonal of the one block, summed in place
            return float(self._groups("relevant")[0][0].sigma.diagonal().sum())
        if self.targets.layers[-1].cols > self.targets.tile_shape[1]:
            return self._relevant_trace_across_tiles()
        return sum(idx.shape[0] * _block_trace(block) for block, idx in self._groups("relevant"))

    def _relevant_trace_across_tiles(self, budget_bytes: int = 64 * 2**20) -> float:
        """tr(P Sigma P) = tr(Sigma) - (1/C) sum_i 1_i^T Sigma 1_i (1_i: input i's cells over the C
        outputs of the classifier), when the C outputs span several tile columns, so that P has no
        per-tile form (a CIFAR-100 head on 64-wide tiles). Sigma 1_i by the profile's matvec, a few
        inputs at a time (``budget_bytes`` of float64 columns)."""
        cells = self.targets.classifier_cells()
        inputs, outputs = cells.shape
        step = max(1, min(inputs, budget_bytes // (8 * self.n)))
        total = 0.0
        for start in range(0, inputs, step):
            rows = cells[start:start + step]  # [b, C]
            E = torch.zeros(self.n, rows.shape[0], dtype=torch.float64)
            E[rows, torch.arange(rows.shape[0])[:, None]] = 1.0
            total += float((E * self.matvec(E)).sum())
        return self.trace() - total / outputs

    def _relevant_mean(self):
        out = torch.empty(self.n, dtype=torch.float64)
        for block, idx in self._groups("relevant"):
            out[idx] = block.mu.expand(idx.shape[0], -1)
        return out

    def _eig(self, k, mode="plain"):
        groups = self._groups(mode)
        if self.whole is not None:
            vals, vecs = groups[0][0].top_eig(k)
            return torch.from_numpy(vals.copy()), torch.from_numpy(vecs)
        want = [min(k, block.m) for block, _ in groups]
        found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        while True:
            for g, (block, _) in enumerate(groups):
                if g not in found or found[g][0].shape[0] < want[g]:
                    found[g] = block.top_eig(want[g])
            # identical tiles repeat each eigenvalue once per tile, eigenvector on that tile
            cands = sorted((-float(v), g, t, j) for g, (block, idx) in enumerate(groups)
                           for j, v in enumerate(found[g][0]) for t in range(idx.shape[0]))
            tol = linalg.TIE_RTOL * max(-cands[0][0], 0.0)
            vk = -cands[k - 1][0]
            # A block whose last computed value is still inside the k-th value's tied group may
            # hold more of that group: ask it for more, so the group is complete.
            short = [g for g, (block, _) in enumerate(groups)
                     if found[g][0].shape[0] < block.m and found[g][0][-1] >= vk - tol]
            if not short:
                break
            for g in short:
                want[g] = min(groups[g][0].m, 2 * found[g][0].shape[0])
        top = [c for c in cands if -c[0] >= vk - tol]  # (value desc, group, tile, index): deterministic
        values = torch.tensor([-c[0] for c in top], dtype=torch.float64)
        vectors = torch.zeros(self.n, len(top), dtype=torch.float64)
        for col, (_, g, t, j) in enumerate(top):
            vectors[groups[g][1][t], col] = torch.from_numpy(found[g][1][:, j].copy())
        return values, vectors

    def _prepare_full(self):
        for block, _ in self.groups:
            if isinstance(block, DenseBlock):
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
        if isinstance(self.device, DenseDevice):
            return [self.device.mu, self.device.sigma]
        return []

    def _device_dict(self):
        d = self.device
        if isinstance(d, CrossbarParams):
            return {"type": "crossbar", "params": d.to_dict(), "units": CROSSBAR_UNITS}
        if isinstance(d, DenseDevice):
            return {"type": "dense", "repair": d.repair_report}
        return {"type": "fitted", "estimator": d.estimator, "tile_shape": list(d.tile_shape_),
                "shrinkage": d.shrinkage_, "n_samples": d.n_samples_, "k": d.k}


def bind(device, targets: Targets, name: str | None = None) -> NoiseProfile:
    """Bind a device (CrossbarParams, fitted FittedTile, DenseDevice) to a model's targets."""
    if not isinstance(targets, Targets):
        raise TypeError(f"targets must be dat.noise.targets.Targets, found {type(targets).__name__}")
    if isinstance(device, CrossbarParams):
        return NoiseProfile(device, targets, name or device.name, "crossbar",
                            lambda r, c: CrossbarBlock(device, r, c, targets.tile_shape))
    if isinstance(device, FittedTile):
        if not device.is_fitted():
            raise ValueError("FittedTile is not fitted yet: call fit(maps) first")
        if tuple(targets.tile_shape) != device.tile_shape_:
            raise ValueError(
                f"the fitted tile is {device.tile_shape_[0]} x {device.tile_shape_[1]} but the targets use "
                f"{targets.tile_shape[0]} x {targets.tile_shape[1]} tiles: build the targets with "
                f"tile={device.tile_shape_}"
            )
        return NoiseProfile(device, targets, name or device.name, "fitted", device.block)
    if isinstance(device, DenseDevice):
        if device.n != targets.n:
            raise ValueError(f"the dense device has n = {device.n} but the targets have n = {targets.n}")
        return NoiseProfile(device, targets, name or device.name, "dense",
                            lambda r, c: DenseBlock(device.mu, device.sigma), whole=True)
    raise TypeError(f"device must be CrossbarParams, FittedTile or DenseDevice, found {type(device).__name__}")
