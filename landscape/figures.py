"""Plotly figures of landscape results: Fig. 2 curves, Fig. 1 panels, 3D surfaces, A-vs-B comparison.

Every function takes a result object (Curves or Surface) and returns a ``plotly.graph_objects.Figure``;
nothing is computed here beyond picking a readable colour range.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .compute import Curves, Surface

LOSS_UNIT = "loss (cross-entropy, nats)"
COLORSCALE = "Viridis"
DIFF_COLORSCALE = "RdBu_r"
PANEL_TITLES = {"none": "without noise"}
AXIS = {
    "trio": ("α  (u = w<sub>DAT-A</sub> − w<sub>SGD</sub>)", "β  (v = 2w<sub>DAT-B</sub> − w<sub>DAT-A</sub> − w<sub>SGD</sub>)"),
    "free": ("α  (random direction d<sub>1</sub>)", "β  (random direction d<sub>2</sub>)"),
}
METRIC_UNIT = {"loss": LOSS_UNIT, "accuracy": "accuracy"}


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _style(fig: go.Figure, title: str | None = None) -> go.Figure:
    fig.update_layout(template="plotly_white", font=dict(family="Arial, Helvetica, sans-serif", size=12),
                      title=dict(text=title) if title else None, margin=dict(l=60, r=20, t=50 if title else 30, b=50))
    return fig


def panel_title(panel: str) -> str:
    return PANEL_TITLES.get(panel, f"under {panel} noise")


# ----------------------------------------------------------------------------------------------
# 1D curves (paper Fig. 2)
# ----------------------------------------------------------------------------------------------
def curves_figure(curves: Curves, metric: str = "loss", *, title: str | None = None) -> go.Figure:
    """One subplot per device; each model a line (mean over draws) with its band; a marker at the
    device's typical noise norm alpha = r (where the device actually puts the weights)."""
    if not isinstance(curves, Curves):
        raise TypeError(f"curves must be a Curves result, found {type(curves).__name__}")
    mean = curves.mean(metric)
    lo, hi = curves.band_limits(metric)
    at_r = (curves.loss_at_typical if metric == "loss" else curves.accuracy_at_typical).mean(axis=2)
    band_name = "±1 std" if curves.band == "std" else "10–90 %"
    fig = make_subplots(rows=1, cols=len(curves.devices), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[f"{d}" for d in curves.devices])
    palette = qualitative.Plotly
    for j, device in enumerate(curves.devices):
        a = curves.alphas[j]
        for i, model in enumerate(curves.models):
            colour = palette[i % len(palette)]
            show = j == 0
            fig.add_trace(go.Scatter(x=a, y=hi[i, j], mode="lines", line=dict(width=0), hoverinfo="skip",
                                     showlegend=False, legendgroup=model), row=1, col=j + 1)
            fig.add_trace(go.Scatter(x=a, y=lo[i, j], mode="lines", line=dict(width=0), fill="tonexty",
                                     fillcolor=_rgba(colour, 0.2), name=f"{model} ({band_name})",
                                     hoverinfo="skip", showlegend=False, legendgroup=model), row=1, col=j + 1)
            fig.add_trace(go.Scatter(x=a, y=mean[i, j], mode="lines", line=dict(color=colour, width=2),
                                     name=model, legendgroup=model, showlegend=show), row=1, col=j + 1)
            fig.add_trace(go.Scatter(x=[curves.typical_norm[i, j]], y=[at_r[i, j]], mode="markers",
                                     marker=dict(color=colour, symbol="diamond", size=8),
                                     name=f"{model} at α = r", legendgroup=model, showlegend=False,
                                     hovertemplate="α = r = %{x:.3g}<br>%{y:.4g}<extra>" + model + "</extra>"),
                          row=1, col=j + 1)
        fig.update_xaxes(title_text="α  (‖αd‖<sub>F</sub>, d = δ/‖δ‖<sub>F</sub>)", row=1, col=j + 1)
    fig.update_yaxes(title_text=METRIC_UNIT[metric], row=1, col=1)
    _style(fig, title)
    fig.update_layout(legend=dict(title=f"band {band_name}, ◆ α = r:", orientation="h", yanchor="top", y=-0.3,
                                  x=0.0),
                      margin=dict(b=110))
    return fig


# ----------------------------------------------------------------------------------------------
# 2D surfaces (paper Fig. 1)
# ----------------------------------------------------------------------------------------------
def _values(surface: Surface, metric: str) -> np.ndarray:
    if metric not in ("loss", "accuracy"):
        raise ValueError(f"metric must be 'loss' or 'accuracy', found {metric!r}")
    return surface.loss if metric == "loss" else surface.accuracy


def colour_range(values: np.ndarray, marker_values=None, clip_quantile: float = 0.9,
                 marker_factor: float = 4.0) -> tuple[float, float]:
    """(min, top) with top = min(q-quantile, marker_factor x the largest loss at a model marker).

    Far from the models the loss grows by orders of magnitude: the top of the scale is tied to the
    models' own losses so that the basins around them stay visible.
    """
    finite = np.asarray(values)[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(np.quantile(finite, clip_quantile))
    if marker_values is not None:
        m = np.asarray(marker_values)[np.isfinite(marker_values)]
        if m.size:
            hi = min(hi, marker_factor * float(m.max()))
    return lo, hi if hi > lo else lo + 1e-12


def _panel_index(surface: Surface, panel: str | None) -> int:
    if panel is None:
        return 0
    if panel not in surface.panels:
        raise ValueError(f"panel must be one of {list(surface.panels)}, found {panel!r}")
    return surface.panels.index(panel)


def _add_markers(fig: go.Figure, surface: Surface, row: int = 1, col: int = 1, z=None) -> None:
    labels = list(surface.markers)
    xs = [surface.markers[m][0] for m in labels]
    ys = [surface.markers[m][1] for m in labels]
    kw = dict(mode="markers+text", text=labels, textposition="top center", showlegend=False,
              marker=dict(color="white", size=9, symbol="x", line=dict(color="black", width=1.5)),
              textfont=dict(color="white", size=11), hovertemplate="%{text}: (%{x}, %{y})<extra></extra>")
    if z is None:
        fig.add_trace(go.Scatter(x=xs, y=ys, **kw), row=row, col=col)
    else:
        kw["marker"] = dict(color="red", size=4)
        kw["textfont"] = dict(color="black", size=11)
        fig.add_trace(go.Scatter3d(x=xs, y=ys, z=z, **kw))


def _trace(kind: str, surface: Surface, z: np.ndarray, zmin: float, zmax: float, colorscale, colorbar, show_scale):
    colorbar = dict(colorbar, tickformat=".3~g", nticks=6)
    common = dict(x=surface.alphas, y=surface.betas, z=z.T, colorscale=colorscale, zmin=zmin, zmax=zmax,
                  colorbar=colorbar, showscale=show_scale)
    if kind == "contour":
        # Contour lines only inside the colour range: beyond it the clipped region would fill with lines.
        return go.Contour(**common, contours=dict(coloring="heatmap", showlines=True, start=zmin, end=zmax,
                                                  size=(zmax - zmin) / 20), line=dict(width=0.5))
    if kind == "heatmap":
        return go.Heatmap(**common)
    raise ValueError(f"kind must be 'contour', 'heatmap' or 'surface3d', found {kind!r}")


def surface_figure(surface: Surface, panel: str | None = None, kind: str = "contour", metric: str = "loss",
                   *, title: str | None = None) -> go.Figure:
    """One panel as a contour map, a heatmap or a 3D surface, with the models marked."""
    p = _panel_index(surface, panel)
    z = _values(surface, metric)[p]
    zmin, zmax = colour_range(z, surface.marker_loss[p]) if metric == "loss" else (0.0, 1.0)
    xlab, ylab = AXIS[surface.meta.get("inputs", {}).get("plane", {}).get("kind", "trio")]
    colorbar = dict(title=dict(text=METRIC_UNIT[metric], side="right"))
    if kind == "surface3d":
        zc = np.minimum(z, zmax) if metric == "loss" else z
        fig = go.Figure(go.Surface(x=surface.alphas, y=surface.betas, z=zc.T, colorscale=COLORSCALE,
                                   cmin=zmin, cmax=zmax, colorbar=colorbar))
        marker_z = (surface.marker_loss if metric == "loss" else surface.marker_accuracy)[p]
        _add_markers(fig, surface, z=np.minimum(marker_z, zmax) if metric == "loss" else marker_z)
        fig.update_layout(scene=dict(xaxis_title="α", yaxis_title="β", zaxis_title=METRIC_UNIT[metric]))
        return _style(fig, title or panel_title(surface.panels[p]))
    fig = make_subplots(rows=1, cols=1)
    fig.add_trace(_trace(kind, surface, z, zmin, zmax, COLORSCALE, colorbar, True))
    _add_markers(fig, surface)
    fig.update_xaxes(title_text=xlab)
    fig.update_yaxes(title_text=ylab)
    return _style(fig, title or panel_title(surface.panels[p]))


def fig1_figure(surface: Surface, kind: str = "contour", metric: str = "loss", *, title: str | None = None) -> go.Figure:
    """Paper Fig. 1: the panels side by side on one colour scale, models marked on each."""
    vals = _values(surface, metric)
    zmin, zmax = colour_range(vals, surface.marker_loss) if metric == "loss" else (0.0, 1.0)
    n = len(surface.panels)
    letters = "abcdefghijklmnopqrstuvwxyz"
    fig = make_subplots(rows=1, cols=n, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[f"({letters[i]}) {panel_title(p)}" for i, p in enumerate(surface.panels)])
    xlab, ylab = AXIS[surface.meta.get("inputs", {}).get("plane", {}).get("kind", "trio")]
    colorbar = dict(title=dict(text=METRIC_UNIT[metric], side="right"))
    for i in range(n):
        fig.add_trace(_trace(kind, surface, vals[i], zmin, zmax, COLORSCALE, colorbar, i == n - 1), row=1, col=i + 1)
        _add_markers(fig, surface, row=1, col=i + 1)
        fig.update_xaxes(title_text=xlab if n == 1 else "α", row=1, col=i + 1)
    fig.update_yaxes(title_text=ylab if n == 1 else "β", row=1, col=1)
    return _style(fig, title)


def comparison_figure(surface: Surface, a: str | None = None, b: str | None = None, kind: str = "contour",
                      *, title: str | None = None) -> go.Figure:
    """Devices A and B side by side on one colour scale, and their difference B − A (diverging,
    centred at 0: red where B's noise costs more than A's), blank where either loss is above the
    shared colour range."""
    noisy = [p for p in surface.panels if p != "none"]
    if a is None or b is None:
        if len(noisy) < 2:
            raise ValueError(f"comparison needs two device panels, found {list(surface.panels)}")
        a, b = a or noisy[0], b or noisy[1]
    ia, ib = _panel_index(surface, a), _panel_index(surface, b)
    la, lb = surface.loss[ia], surface.loss[ib]
    zmin, zmax = colour_range(np.stack([la, lb]), surface.marker_loss[[ia, ib]])
    diff = lb - la
    # The difference's scale comes from where both panels are on the visible colour range.
    shown = np.isfinite(diff) & (np.maximum(la, lb) <= zmax)
    finite = diff[shown] if shown.any() else diff[np.isfinite(diff)]
    m = float(np.quantile(np.abs(finite), 0.9)) if finite.size else 1.0
    m = m if m > 0 else 1e-12
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[a, b, f"{b} − {a}"])
    # Horizontal colour bars under the panels they belong to: one shared by A and B, one for the difference.
    x1, x3 = fig.layout.xaxis.domain, fig.layout.xaxis3.domain
    x2 = fig.layout.xaxis2.domain
    cb = dict(title=dict(text=LOSS_UNIT, side="bottom"), orientation="h", x=(x1[0] + x2[1]) / 2, xanchor="center",
              len=x2[1] - x1[0], y=-0.36, yanchor="top", thickness=10)
    cbd = dict(title=dict(text="Δ loss (nats)", side="bottom"), orientation="h", x=(x3[0] + x3[1]) / 2,
               xanchor="center", len=x3[1] - x3[0], y=-0.36, yanchor="top", thickness=10)
    fig.add_trace(_trace(kind, surface, la, zmin, zmax, COLORSCALE, cb, False), row=1, col=1)
    fig.add_trace(_trace(kind, surface, lb, zmin, zmax, COLORSCALE, cb, True), row=1, col=2)
    # Where either loss is off the colour range the difference says nothing readable (two huge
    # losses subtracted): leave it blank rather than paint it at full strength.
    fig.add_trace(_trace(kind, surface, np.where(shown, diff, np.nan), -m, m, DIFF_COLORSCALE, cbd, True),
                  row=1, col=3)
    for c in (1, 2, 3):
        _add_markers(fig, surface, row=1, col=c)
        fig.update_xaxes(title_text="α", row=1, col=c)
    fig.update_yaxes(title_text="β", row=1, col=1)
    _style(fig, title)
    fig.update_layout(margin=dict(b=150))
    return fig


def default_figures(result) -> dict[str, go.Figure]:
    """The figures a bundle carries for a result: curves (loss, accuracy) or surfaces (Fig. 1 as
    contours, each panel in 3D, and the A-vs-B comparison when there are two device panels)."""
    if isinstance(result, Curves):
        return {"curves_loss": curves_figure(result, "loss"), "curves_accuracy": curves_figure(result, "accuracy")}
    if not isinstance(result, Surface):
        raise TypeError(f"result must be Curves or Surface, found {type(result).__name__}")
    figs = {"fig1_contour": fig1_figure(result, "contour")}
    for p in result.panels:
        figs[f"surface3d_{p}"] = surface_figure(result, p, "surface3d")
    if len([p for p in result.panels if p != "none"]) >= 2:
        figs["compare_devices"] = comparison_figure(result)
    return figs
