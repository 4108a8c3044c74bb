"""The parametric ReRAM crossbar device: its Sigma formula and its parameters (`CrossbarParams`, the
presets device-A / device-B), with numpy only, so that the dashboard's forms list and edit devices
before torch has loaded. The formula's code for one tile (`CrossbarBlock`: mean, variance, Sigma x,
exact draws, eigenpairs) is `dat.noise.crossbar_block`; `dat.noise.profile.bind(device, targets)`
repeats the block over every tile of a model's targets.

Every noise value is relative to g_max, the conductance that max|W| of a layer is mapped to
(see `dat.noise.targets`): a std of 0.05 means 5% of g_max.

Parametric crossbar model, per tile of R x C cells (cell (r, c) at eta index r*C + c):

  Sigma_tile = s_sp^2 Kr (x) Kc                 device-to-device variation, spatially correlated
             + s_row^2 (I_R (x) 1 1^T_C)        shared by the cells of one word line (row)
             + s_col^2 (1 1^T_R (x) I_C)        shared by the cells of one bit line (column)
             + s_tile^2 1 1^T                   shared by the whole tile
             + s_prog^2 I                       programming noise, independent per cell
  mu_tile(r, c) = relaxation(t) + g_row * (r / (R0 - 1) - 1/2) + g_col * (c / (C0 - 1) - 1/2)

The spatial kernel is separable so that Kr (x) Kc is exact, not an approximation:
  exponential over the L1 (Manhattan) cell distance: exp(-(|dr| + |dc|) / ell)
             = exp(-|dr| / ell) * exp(-|dc| / ell);
  Gaussian over the Euclidean cell distance: exp(-(dr^2 + dc^2) / (2 ell^2))
             = exp(-dr^2 / (2 ell^2)) * exp(-dc^2 / (2 ell^2)).
(R0, C0) is the nominal tile shape: a partial edge tile sees the part of the gradient its cells
occupy. Tiles are independent, so Sigma over all targets is block-diagonal.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from dat.noise.checks import finite_number

KERNELS = ("exponential", "gaussian")

# Programming-noise std (fraction of g_max) against time since programming, from the Wan et al.
# (Nature 608, 504, 2022) ReRAM fits used by IBM aihwkit's `ReRamWan2022NoiseModel`: the 4th-order
# polynomials in g/g_max (in uS at g_max = 40 uS) for 1 s, 1 day and 2 days, reduced to one number
# each as their RMS over g/g_max uniform on [0, 1], divided by 40 uS. The polynomials range over
# 0.9-5.8% of g_max at 1 s and 1.8-10% after a day.
WAN2022_PROG_STD = ((1.0, 0.0446), (86400.0, 0.0844), (172800.0, 0.0842))


def wan2022_prog_std(t_seconds: float) -> float:
    """Programming-noise std at t seconds: linear in log10(t) between the fitted times, held at
    the last fit beyond 2 days (no data there)."""
    logs = [math.log10(t) for t, _ in WAN2022_PROG_STD]
    vals = [v for _, v in WAN2022_PROG_STD]
    return float(np.interp(math.log10(t_seconds), logs, vals))


@dataclass(frozen=True)
class CrossbarParams:
    """Parametric ReRAM crossbar device. Stds and means are fractions of g_max."""

    name: str = "custom"
    # Spatial kernel of device-to-device variation: "exponential" (L1 cell distance) or "gaussian".
    kernel: str = "exponential"
    # Correlation length of that variation, in cells (> 0).
    ell: float = 2.0
    # Std of the spatially correlated device-to-device variation (fraction of g_max).
    sigma_spatial: float = 0.0
    # Std of the component shared by all cells on one word line (row): driver / IR-drop variation.
    sigma_row: float = 0.0
    # Std of the component shared by all cells on one bit line (column): sense amplifier / ADC
    # offset and bit-line resistance.
    sigma_col: float = 0.0
    # Std of the component shared by the whole tile: die- or tile-level process shift.
    sigma_tile: float = 0.0
    # Multiplier (dimensionless) on the Wan et al. 2022 programming-noise std at t_seconds.
    prog_noise: float = 1.0
    # Mean conductance relaxation per decade of t / 1 s (fraction of g_max; negative = decay).
    relax_per_decade: float = 0.0
    # Mean difference between the last and first row (col) of a tile: a linear gradient across
    # the tile from, e.g., oxide-thickness or line-resistance gradients (fraction of g_max).
    grad_row: float = 0.0
    grad_col: float = 0.0
    # Time since programming in seconds (>= 1 s, the earliest time the fits describe).
    t_seconds: float = 1.0
    # Dimensionless multiplier on every std above (one calibration number per preset).
    scale: float = 1.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, found {self.name!r}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, found {self.kernel!r}")
        finite_number("ell (correlation length, cells)", self.ell, 0.0, strict=True)
        for f in ("sigma_spatial", "sigma_row", "sigma_col", "sigma_tile", "prog_noise", "scale"):
            finite_number(f, getattr(self, f), 0.0)
        for f in ("relax_per_decade", "grad_row", "grad_col"):
            finite_number(f, getattr(self, f))
        finite_number("t_seconds (time since programming)", self.t_seconds, 1.0)

    # -- derived quantities ---------------------------------------------------------------
    def stds(self) -> dict[str, float]:
        """Effective stds at t_seconds, `scale` applied (fractions of g_max)."""
        return {
            "spatial": self.scale * self.sigma_spatial,
            "row": self.scale * self.sigma_row,
            "col": self.scale * self.sigma_col,
            "tile": self.scale * self.sigma_tile,
            "prog": self.scale * self.prog_noise * wan2022_prog_std(self.t_seconds),
        }

    def relaxation(self) -> float:
        """Mean shift at t_seconds: linear in log10(t / 1 s), zero at 1 s."""
        return self.relax_per_decade * math.log10(self.t_seconds)

    def kernel_1d(self, m: int) -> np.ndarray:
        """The per-axis factor K[i, j] = k(|i - j|) of the separable spatial kernel, [m, m]."""
        d = np.abs(np.subtract.outer(np.arange(m), np.arange(m))).astype(np.float64)
        if self.kernel == "exponential":
            return np.exp(-d / self.ell)
        return np.exp(-(d**2) / (2.0 * self.ell**2))

    def tile_mean(self, rows: int, cols: int, tile_shape: tuple[int, int]) -> np.ndarray:
        """mu over the used rows x cols cells of a tile of nominal shape tile_shape, row-major."""
        R0, C0 = tile_shape
        xr = np.arange(rows) / (R0 - 1) - 0.5 if R0 > 1 else np.zeros(rows)
        xc = np.arange(cols) / (C0 - 1) - 0.5 if C0 > 1 else np.zeros(cols)
        mu = self.relaxation() + self.grad_row * xr[:, None] + self.grad_col * xc[None, :]
        return mu.reshape(-1)

    def replace(self, **overrides) -> "CrossbarParams":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown CrossbarParams field(s) {sorted(unknown)}; fields are "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Units of every CrossbarParams field, saved with profiles.
CROSSBAR_UNITS = {
    "name": "-", "kernel": "-", "ell": "cells", "sigma_spatial": "fraction of g_max",
    "sigma_row": "fraction of g_max", "sigma_col": "fraction of g_max",
    "sigma_tile": "fraction of g_max", "prog_noise": "x Wan et al. 2022 std",
    "relax_per_decade": "fraction of g_max per decade of t/1s", "grad_row": "fraction of g_max",
    "grad_col": "fraction of g_max", "t_seconds": "s", "scale": "dimensionless",
}

# Two physically different devices, at literature magnitudes (scale 1: these ARE the devices) one
# day after programming. Per-cell std (all components): device-A 0.095, device-B 0.099 of g_max,
# matching "about 10 % of g_max after a day" (Wan et al. 2022 ReRAM fits as used by IBM aihwkit:
# 1.8-10 % of g_max after a day; for comparison PCM programming noise is about 4 %, Joshi et al.
# 2020, Nat. Commun. 11, 2473, the basis of aihwkit's PCMLikeNoiseModel). On the small digits CNN
# these magnitudes cost the last layer only a few points, so the digits experiment adds a separate,
# named `stress` factor
# (dat.config.TrainConfig.stress, default 1 = off), never folded into the presets; see
# bench/calibrate_presets.py and docs/device_model.md for what each preset costs which model.
PRESETS: dict[str, CrossbarParams] = {
    # Device A: strong short-range correlation (neighbouring filaments share local oxide
    # thickness and forming conditions) and word-line-shared noise.
    "device-A": CrossbarParams(
        name="device-A",
        kernel="exponential",
        ell=2.0,  # assumption: correlation over about two cells
        # assumption: device-to-device std of the order of the Wan 2022 programming noise at 1 s
        # (4.5 % of g_max; aihwkit's ReRamWan2022NoiseModel)
        sigma_spatial=0.04,
        sigma_row=0.02,  # assumption: word-line driver / IR-drop variation, half the above
        sigma_col=0.0,
        sigma_tile=0.005,  # assumption: small tile-level process shift (0.5 % of g_max)
        prog_noise=1.0,  # Wan et al. 2022, as fitted in aihwkit: 8.4 % of g_max after a day
        relax_per_decade=0.0,  # assumption: a device with negligible mean relaxation
        grad_row=0.0,
        grad_col=0.0,
        t_seconds=86400.0,  # one day after programming (Wan et al. 2022 fit at 1 day)
        scale=1.0,  # physical magnitudes: no calibration multiplier
    ),
    # Device B: long-range correlation (wafer-scale thickness variation seen across a tile),
    # bit-line-shared noise and a log-time relaxation with a gradient across the bit lines.
    "device-B": CrossbarParams(
        name="device-B",
        kernel="gaussian",
        ell=16.0,  # assumption: correlation over a quarter of a 64-cell tile
        sigma_spatial=0.04,  # assumption: as device A (order of Wan 2022 at 1 s), but long-range
        sigma_row=0.0,
        sigma_col=0.03,  # assumption: column sense-amplifier / ADC offset, 3 % of g_max
        sigma_tile=0.01,  # assumption: tile-level process shift (1 % of g_max)
        prog_noise=1.0,  # Wan et al. 2022, as fitted in aihwkit: 8.4 % of g_max after a day
        # assumption: 1 % of g_max decay per decade of time, the log-time form of ReRAM relaxation
        # (aihwkit's ReRamCMONoiseModel also models the mean shift as linear in log t): -4.9 % at 1 day
        relax_per_decade=-0.01,
        grad_row=0.0,
        grad_col=0.02,  # assumption: 2 % of g_max from first to last bit line of a tile
        t_seconds=86400.0,  # one day after programming (Wan et al. 2022 fit at 1 day)
        scale=1.0,  # physical magnitudes: no calibration multiplier
    ),
}


def per_cell_std(device: "CrossbarParams") -> float:
    """The total per-cell std (all components at t_seconds, `scale` applied), fraction of g_max."""
    return math.sqrt(sum(v * v for v in device.stds().values()))


def preset(name: str, /, **overrides) -> CrossbarParams:
    """A preset by name, with field overrides (`name=` among them renames the device)."""
    if name not in PRESETS:
        raise ValueError(f"unknown device preset {name!r}; presets are {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
