"""What a device's noise looks like on one crossbar tile: numbers and Plotly figures for the dashboard.

A device (`CrossbarParams`, `FittedTile`) is model-independent; to look at it we bind it to a
single full tile of R x C cells (`tile_profile`), so eta index r * C + c is cell (r, c): row r is
a word line, column c a bit line. Everything here works through the profile's public interface
(sampler, matvec, variance, spectrum), so it never forms the tile's full Sigma.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from dat.figure_layout import for_width, name_panel_titles, style, tag
from dat.noise.crossbar import CrossbarParams
from dat.noise.dense import DenseDevice
from dat.noise.fitted import FittedTile
from dat.noise.profile import NoiseProfile, bind
from dat.noise.targets import Targets

DEFAULT_TILE = (64, 64)

# One colour and dash per device, in every figure (Okabe-Ito, dat.figure_layout.PALETTE); each figure
# is tagged for dat.figure_layout.for_width and returned laid out for the screen.


def tile_profile(device, tile: tuple[int, int] | None = None) -> NoiseProfile:
    """The device bound to one crossbar tile (a fitted tile always uses its own measured shape; a
    dense device's n values are laid out on `dense_grid(n)`, whatever ``tile`` is)."""
    if isinstance(device, FittedTile):
        tile = device.tile_shape_
    elif isinstance(device, DenseDevice):
        tile = dense_grid(device.n)
    rows, cols = tile or DEFAULT_TILE
    # A weight W of shape [out, in] = [cols, rows] fills exactly one tile (inputs on word lines).
    targets = Targets([("crossbar", (cols, rows))], tile=(rows, cols), units="absolute")
    return bind(device, targets)


def dense_grid(n: int) -> tuple[int, int]:
    """The most nearly square rows x cols = n grid (rows <= cols) to lay out a dense device's n
    values in their own order: a dense device has no tile of its own."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


def _tile_shape(profile: NoiseProfile) -> tuple[int, int]:
    layer = profile.targets.layers[0]
    if len(profile.targets.layers) != 1 or (layer.rows, layer.cols) != tuple(profile.targets.tile_shape):
        raise ValueError(f"expected a profile bound to one full tile (see tile_profile), found "
                         f"{profile.targets!r}")
    return layer.rows, layer.cols


def noise_maps(profile: NoiseProfile, num: int = 3, seed: int = 0) -> np.ndarray:
    """``num`` exact draws of eta on the tile, as maps [num, rows, cols] (fraction of g_max)."""
    rows, cols = _tile_shape(profile)
    if not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive int, found {num!r}")
    eta = profile.sampler("full").sample(num, torch.Generator().manual_seed(seed))
    return eta.double().numpy().reshape(num, rows, cols)


def sigma_window(profile: NoiseProfile, window: int = 256) -> np.ndarray:
    """The top-left ``window`` x ``window`` block of Sigma (cells 0..window-1 in row-major order),
    from ``window`` matvecs with unit vectors rather than the full n x n matrix."""
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, found {window!r}")
    w = min(window, profile.n)
    unit = torch.zeros(profile.n, w, dtype=torch.float64)
    unit[torch.arange(w), torch.arange(w)] = 1.0
    return profile.matvec(unit)[:w].numpy()


def correlation_profile(profile: NoiseProfile, ref: tuple[int, int] | None = None) -> dict:
    """Correlation of every cell with a reference cell (the tile centre by default).

    Returns the offsets along the reference's word line (same row) and bit line (same column),
    the correlations there, and every cell's Euclidean distance and correlation for a scatter.
    """
    rows, cols = _tile_shape(profile)
    r0, c0 = ref if ref is not None else (rows // 2, cols // 2)
    if not (0 <= r0 < rows and 0 <= c0 < cols):
        raise ValueError(f"reference cell must lie in the {rows} x {cols} tile, found {(r0, c0)}")
    i = r0 * cols + c0
    unit = torch.zeros(profile.n, dtype=torch.float64)
    unit[i] = 1.0
    column = profile.matvec(unit).numpy()  # Sigma[:, i]
    var = profile.variance().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(var > 0, column / np.sqrt(var * var[i]), 0.0).reshape(rows, cols)
    rr, cc = np.meshgrid(np.arange(rows) - r0, np.arange(cols) - c0, indexing="ij")
    return {
        "ref": (int(r0), int(c0)),
        "word_line_offset": np.arange(cols - c0), "word_line": corr[r0, c0:],
        "bit_line_offset": np.arange(rows - r0), "bit_line": corr[r0:, c0],
        "distance": np.hypot(rr, cc).reshape(-1), "corr": corr.reshape(-1),
    }


# -- figures ------------------------------------------------------------------------------------
def _symmetric_limit(*arrays: np.ndarray) -> float:
    return float(max(np.abs(a).max() for a in arrays)) or 1.0


def noise_maps_figure(maps: dict[str, np.ndarray], zmax: float | None = None) -> go.Figure:
    """Sampled noise maps, one row per device and one column per draw, on one colour scale."""
    names = list(maps)
    num = max(m.shape[0] for m in maps.values())
    zmax = zmax or _symmetric_limit(*maps.values())
    fig = make_subplots(rows=len(names), cols=num, horizontal_spacing=0.02, vertical_spacing=0.08,
                        subplot_titles=[f"{n}: draw {j + 1}" for n in names for j in range(num)])
    name_panel_titles(fig, len(names) * num)
    for i, name in enumerate(names):
        for j, m in enumerate(maps[name]):
            fig.add_trace(go.Heatmap(z=m, zmin=-zmax, zmax=zmax, colorscale="RdBu_r",
                                     showscale=(i == 0 and j == 0),
                                     colorbar=dict(title=dict(text="η (fraction of g_max)")),
                                     hovertemplate="word line %{y}, bit line %{x}: %{z:.4f}<extra></extra>"),
                          row=i + 1, col=j + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    tag(fig, "maps", rows=len(names), cols=num)
    return for_width(fig, "screen")[0]


def sigma_figure(sigma: np.ndarray, title: str, zmax: float | None = None) -> go.Figure:
    """A window of Sigma as a heatmap (rows and columns are cells in row-major order)."""
    zmax = zmax or _symmetric_limit(sigma)
    fig = go.Figure(go.Heatmap(z=sigma, zmin=-zmax, zmax=zmax, colorscale="RdBu_r",
                               colorbar=dict(title=dict(text="covariance (g_max²)")),
                               hovertemplate="cell %{y}, cell %{x}: %{z:.3g}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="cell (row-major)")
    fig.update_xaxes(title="cell (row-major)")
    fig.update_layout(title=title)
    tag(fig, "lines", ncols=1, aspect=1.0, colorbars="right", left_em=4.5)
    return for_width(fig, "screen")[0]


def correlation_figure(profiles: dict[str, dict]) -> go.Figure:
    """Correlation against cell offset along a word line and a bit line, one colour per device."""
    fig = go.Figure()
    for k, (name, c) in enumerate(profiles.items()):
        st = style(k)
        # Colour and marker per device; solid along the word line, dashed along the bit line.
        fig.add_trace(go.Scatter(x=c["word_line_offset"], y=c["word_line"], mode="lines+markers",
                                 name=f"{name}: along word line (same row)", line=dict(color=st["color"]),
                                 marker=dict(symbol=st["symbol"], size=5)))
        fig.add_trace(go.Scatter(x=c["bit_line_offset"], y=c["bit_line"], mode="lines+markers",
                                 name=f"{name}: along bit line (same column)",
                                 line=dict(color=st["color"], dash="dash"), marker=dict(symbol=st["symbol"], size=5)))
    fig.update_layout(xaxis_title="offset from the tile centre (cells)", yaxis_title="correlation",
                      yaxis_range=[-0.05, 1.05])
    tag(fig, "lines", ncols=1, aspect=0.55, legend=True)
    return for_width(fig, "screen")[0]


def spectrum_figure(spectra: dict[str, dict], k: int) -> go.Figure:
    """Eigenvalues (log scale) and the captured-variance curve; a line marks the chosen k."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("eigenvalues of Σ", "captured variance"))
    name_panel_titles(fig, 2)
    for i, (name, s) in enumerate(spectra.items()):
        st = style(i)
        line = dict(color=st["color"], dash=st["dash"])
        fig.add_trace(go.Scatter(x=s["k"], y=s["eigenvalues"], mode="lines+markers", name=name, line=line,
                                 marker=dict(symbol=st["symbol"], size=5), legendgroup=name), row=1, col=1)
        fig.add_trace(go.Scatter(x=s["k"], y=s["captured_variance"], mode="lines", name=f"{name} (captured)",
                                 line=line, showlegend=False, legendgroup=name), row=1, col=2)
    for col in (1, 2):
        fig.add_vline(x=k, line_dash="dot", line_color="grey", row=1, col=col)
    fig.update_yaxes(type="log", dtick=1, exponentformat="e", row=1, col=1)  # one tick per decade, full-size text
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_xaxes(title="k (eigenvalue rank)")
    tag(fig, "lines", ncols=2, aspect=0.75, legend=True, shared_y=False, left_em=3.6)
    return for_width(fig, "screen")[0]


# -- noise against time since programming -------------------------------------------------------
# Okabe-Ito colours (colour-blind safe), one per noise component; devices differ by line style.
TIME_COMPONENT_COLOURS = {"total": "#000000", "prog": "#E69F00", "spatial": "#0072B2", "row": "#009E73",
                          "col": "#CC79A7", "tile": "#D55E00"}
TIME_COMPONENT_NAMES = {"total": "total per-cell std", "prog": "programming noise", "spatial": "spatial variation",
                        "row": "word-line shared", "col": "bit-line shared", "tile": "tile shared"}
TIME_TICKS = {1.0: "1 s", 60.0: "1 min", 3600.0: "1 h", 86400.0: "1 day", 604800.0: "1 week",
              2629800.0: "1 month"}


def noise_over_time(device, times=None) -> dict:
    """How a parametric crossbar device's noise changes with time since programming: the per-cell std
    of each component, the total per-cell std (square root of the summed variances, which is the
    std of every cell: each component adds its variance to each cell's diagonal entry of Sigma) and
    the mean shift, at ``times`` seconds (default: 49 times log-spaced from 1 s to 1 month, plus the
    device's own time). All in fractions of g_max. Only the programming noise and the mean shift
    depend on time; a fitted or dense device was measured at one time and has no time model."""
    if not isinstance(device, CrossbarParams):
        raise ValueError(f"expected a parametric crossbar device (it has a time model), found "
                         f"{type(device).__name__}")
    if times is None:
        times = np.union1d(np.logspace(0.0, math.log10(2629800.0), 49), [device.t_seconds])
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or times.size == 0 or not np.all(np.isfinite(times)) or times.min() < 1.0:
        raise ValueError(f"expected a non-empty list of finite times >= 1 s, found {times!r}")
    at_times = [device.replace(t_seconds=float(t)) for t in times]
    stds = {name: np.array([d.stds()[name] for d in at_times]) for name in at_times[0].stds()}
    total = np.sqrt(sum(s**2 for s in stds.values()))
    return {"t_seconds": times, "stds": stds, "total": total,
            "mean_shift": np.array([d.relaxation() for d in at_times]), "t_device": float(device.t_seconds)}


def noise_over_time_figure(curves: dict[str, dict]) -> go.Figure:
    """Per-cell noise std against time since programming (log time), one line style per device and
    one colour per component (components that are zero at every time are left out); a marker shows
    each device's chosen time. ``curves``: {device label: noise_over_time(...)}."""
    dashes = ["solid", "dash", "dot", "dashdot"]
    fig = go.Figure()
    for i, (name, c) in enumerate(curves.items()):
        t = c["t_seconds"]
        lines = {"total": c["total"], **{k: v for k, v in c["stds"].items() if np.any(v > 0)}}
        for comp, values in lines.items():
            fig.add_trace(go.Scatter(
                x=t, y=values, mode="lines", name=f"{name}: {TIME_COMPONENT_NAMES[comp]}",
                line=dict(color=TIME_COMPONENT_COLOURS[comp], dash=dashes[i % len(dashes)],
                          width=3 if comp == "total" else 2),
                hovertemplate=f"{name}, {TIME_COMPONENT_NAMES[comp]}: %{{y:.4f}} of g_max "
                              "at %{x:.3g} s<extra></extra>"))
        here = int(np.argmin(np.abs(np.log10(t) - math.log10(c["t_device"]))))
        fig.add_trace(go.Scatter(x=[t[here]], y=[c["total"][here]], mode="markers", showlegend=True,
                                 name=f"{name}: chosen time", marker=dict(color="#000000", size=10,
                                                                          symbol=["circle", "diamond"][i % 2]),
                                 hovertemplate=f"{name} at its chosen time: total std %{{y:.4f}} of g_max "
                                               "at %{x:.3g} s<extra></extra>"))
    fig.update_xaxes(type="log", title="time since programming", tickvals=list(TIME_TICKS),
                     ticktext=list(TIME_TICKS.values()))
    fig.update_yaxes(title="per-cell noise std (fraction of g_max)", rangemode="tozero")
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.25))
    return fig
