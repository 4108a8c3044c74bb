"""One tile's block of the crossbar formula of `dat.noise.crossbar` (its mean, variance, Sigma x
without forming Sigma, the dense Sigma, exact draws and eigenpairs), in torch."""

from __future__ import annotations

import numpy as np
import torch

from dat.noise import linalg
from dat.noise.crossbar import CrossbarParams


class CrossbarBlock:
    """One tile shape (rows x cols used cells of a nominal tile_shape) of the formula above."""

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

        return linalg.top_eig(mv, self.m, k, dense=lambda: self.dense().numpy(),
                              store=self.__dict__.setdefault("_eig_store", {}))
