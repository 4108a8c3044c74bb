"""A dense device N(mu, Sigma) given over n noise values, and the dense block that carries any
explicit mean and covariance (a fitted tile's, or a dense device's over the whole of eta)."""

from __future__ import annotations

import torch

from dat.noise import linalg
from dat.noise.checks import check_covariance, check_mean


class DenseDevice:
    """A device given directly as N(mu, Sigma) over n noise values (in the targets' eta order).

    Sigma is validated on entry (see `check_covariance`); `repair_report` says what was found and
    whether negative eigenvalues were clipped.
    """

    def __init__(self, mu, sigma, name: str = "dense", repair: bool = False):
        self.sigma, self.repair_report = check_covariance(sigma, repair=repair)
        self.mu = check_mean(mu, self.sigma.shape[0])
        self.name = name

    @property
    def n(self) -> int:
        return self.sigma.shape[0]

    def __repr__(self) -> str:
        return f"DenseDevice(name={self.name!r}, n={self.n})"


class DenseBlock:
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
            self._L, self.jitter = linalg.cholesky(self.sigma.clone)
        return self._L

    def sample(self, num, generator):
        L = self.cholesky().to(generator.device)
        Z = torch.randn(num, self.m, generator=generator, device=generator.device)
        return Z @ L.T

    def top_eig(self, k):
        s = self.sigma.numpy()
        return linalg.top_eig(lambda x: s @ x, self.m, k, dense=lambda: s,
                              store=self.__dict__.setdefault("_eig_store", {}))
