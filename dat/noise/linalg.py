"""Linear algebra of the noise profile: top eigenpairs of a symmetric PSD operator with a canonical
basis (so the result does not depend on the eigensolver), Cholesky factors of a dense Sigma (in
place, with a jitter ladder for singular matrices) and the triangular product of a draw.
Every function works on one block (a tile, or the whole of eta for a dense device).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg as spla
import torch

SMALL_TILE = 1024  # up to this many cells a tile's eigenpairs come from a dense eigh
# Relative jitters tried, in turn, when a PSD but singular Sigma has no Cholesky factor.
JITTERS = (0.0, 1e-12, 1e-10, 1e-8)


def check_k(k, n) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, found {type(k).__name__}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and n = {n}, found k = {k}")
    return int(k)


# Eigenvalues closer than TIE_RTOL * (largest eigenvalue) to one another are one tied group.
TIE_RTOL = 1e-6


def canonical_basis(vecs: np.ndarray) -> np.ndarray:
    """A basis of span(vecs) that does not depend on which basis the eigensolver returned.

    Pivoted Cholesky of the projector P = V V^T: pivot j is the cell with the largest remaining
    diagonal of P (the lowest index among those within 1e-6 of it, so exact symmetric ties do not
    depend on rounding), and column j is P's residual column there, scaled so that its pivot entry
    is positive. For one vector this is the sign rule "largest |component| positive, first such
    cell on ties"; for a tied group it fixes the rotation inside the eigenspace. P = W W^T with W
    orthonormal (P is a projector), so W spans the same space."""
    m, g = vecs.shape
    W = np.zeros((m, g))
    d = (vecs**2).sum(1)  # diag(P)
    for j in range(g):
        piv = int(np.flatnonzero(d >= d.max() * (1 - 1e-6))[0])
        col = vecs @ vecs[piv] - W[:, :j] @ W[piv, :j]  # P e_piv minus what W already spans
        W[:, j] = col / np.sqrt(max(col[piv], 1e-300))
        d = d - W[:, j] ** 2
    return W


def tie_groups(vals: np.ndarray, tol: float) -> list[tuple[int, int]]:
    """[start, end) of runs of a descending array whose values lie within tol of the run's first."""
    groups, start = [], 0
    for i in range(1, len(vals) + 1):
        if i == len(vals) or vals[start] - vals[i] > tol:
            groups.append((start, i))
            start = i
    return groups


def canonical(vals: np.ndarray, vecs: np.ndarray, tol: float) -> np.ndarray:
    out = np.empty_like(vecs)
    for a, b in tie_groups(vals, tol):
        out[:, a:b] = canonical_basis(vecs[:, a:b])
    return out


def top_eig(matvec, m: int, k: int, dense=None, store: dict | None = None):
    """Top eigenpairs of a symmetric PSD operator of size m, descending: at least k of them, more
    when the k-th is tied with the next (the list ends at a tie-group boundary, see TIE_RTOL), with
    canonical vectors (`canonical_basis`), so the result does not depend on the eigensolver.
    Lanczos (eigsh) asks for more pairs until the group closes; past m / 2 a dense eigh is used."""
    want, vals = k, None
    while m > SMALL_TILE and want < m // 2:
        op = spla.LinearOperator((m, m), matvec=matvec, matmat=matvec, dtype=np.float64)
        v0 = np.random.default_rng(0).standard_normal(m)  # fixed start: eigsh is otherwise seeded globally
        vals, vecs = spla.eigsh(op, k=want + 1, which="LA", v0=v0, tol=1e-10)
        order = np.argsort(vals)[::-1]
        vals, vecs = np.clip(vals[order], 0.0, None), vecs[:, order]
        end = next(b for a, b in tie_groups(vals, TIE_RTOL * max(vals[0], 0.0)) if b >= k)
        if end <= want:  # the group holding the k-th value closed inside the list
            vals, vecs = vals[:end], vecs[:, :end]
            break
        want, vals = 2 * want, None
    if vals is None:
        if store is not None and "eigh" in store:  # a later, larger k reuses the decomposition
            vals, vecs = store["eigh"]
        else:
            mat = dense() if dense is not None else matvec(np.eye(m))
            vals, vecs = (x.numpy() for x in torch.linalg.eigh(torch.as_tensor(mat, dtype=torch.float64)))
            vals, vecs = np.clip(vals[::-1], 0.0, None), vecs[:, ::-1]
            if store is not None:
                store["eigh"] = (vals, vecs)
        end = next(b for a, b in tie_groups(vals, TIE_RTOL * max(vals[0], 0.0)) if b >= k)
        vals, vecs = vals[:end], vecs[:, :end]
    vals = np.ascontiguousarray(vals)
    return vals, canonical(vals, np.ascontiguousarray(vecs), TIE_RTOL * max(float(vals[0]), 0.0))


def potrf_inplace(a: torch.Tensor, block: int = 1024) -> int:
    """Overwrite the lower triangle of the symmetric float64 matrix ``a`` with its Cholesky factor
    (LAPACK's left-looking blocked algorithm: for each column block, subtract the finished columns'
    contribution, factor the diagonal block, solve for the block below it). The set-up thus holds
    one n x n matrix plus an n x block panel. The strict upper triangle is left as it was. Returns
    0, or (as LAPACK's info) the 1-based column at which ``a`` is found not positive definite."""
    n = a.shape[0]
    for k0 in range(0, n, block):
        k1 = min(k0 + block, n)
        panel = a[k0:, k0:k1]  # a view: rows k0.., columns of this block
        if k0:
            panel -= a[k0:, :k0] @ a[k0:k1, :k0].T  # A[k0:, J] - L[k0:, :k0] L[J, :k0]^T
        Lkk, info = torch.linalg.cholesky_ex(panel[: k1 - k0])
        if int(info):
            return k0 + int(info)
        panel[: k1 - k0] = Lkk
        if k1 < n:  # L[k1:, J] = A[k1:, J] Lkk^-T
            panel[k1 - k0:] = torch.linalg.solve_triangular(Lkk.T, panel[k1 - k0:], upper=True, left=False)
    return 0


def cholesky(make_sigma) -> tuple[torch.Tensor, float]:
    """Cholesky factor L (float32, lower) of a PSD matrix, computed in float64. ``make_sigma()``
    returns a fresh float64 copy of Sigma that is factored in place (`potrf_inplace`), so the
    set-up holds one n x n float64 matrix, not two. A singular Sigma gets the smallest jitter of
    JITTERS times mean(diag) that makes it PD (the added variance is at most 1e-8 of the average
    variance)."""
    for jit in JITTERS:
        a = make_sigma().to(torch.float64).contiguous()
        scale = float(a.diagonal().mean()) if a.numel() else 1.0
        if jit:
            a.diagonal().add_(jit * scale)  # Sigma + jitter I, in place
        if potrf_inplace(a) == 0:
            return a.tril_().float(), jit * scale
        del a
    raise ValueError(
        f"Sigma is not positive definite even with jitter {JITTERS[-1]:g} x mean variance: "
        "use the low-rank sampler or repair the matrix"
    )


def lower_matmul(z: torch.Tensor, L: torch.Tensor, block: int = 2048) -> torch.Tensor:
    """z @ L.T for a lower-triangular L, skipping L's zero upper triangle: column block J of the
    result needs only L's rows J and columns up to the block's end (about half of z @ L.T's work)."""
    n = L.shape[0]
    if n <= 2 * block:  # too few blocks to pay for the extra GEMM calls
        return z @ L.T
    out = torch.empty(z.shape[0], n, dtype=z.dtype, device=z.device)
    for j0 in range(0, n, block):
        j1 = min(j0 + block, n)
        out[:, j0:j1] = z[:, :j1] @ L[j0:j1, :j1].T  # (L z)_i = sum_{c <= i} L_ic z_c
    return out
