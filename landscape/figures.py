"""Plotly figures of landscape results: Fig. 2 curves, Fig. 1 panels, 3D surfaces, A-vs-B comparison.

Every function takes a result object (Curves or Surface) and returns a ``plotly.graph_objects.Figure``
laid out for the screen; ``dat.figure_layout.for_width(fig, "single" | "double" | "slide")`` lays
out a copy for print. Loss maps use a logarithmic colour scale with round ticks, shared by every
panel of a surface (the loss spans orders of magnitude between the basins and the plane's edges).
Every Monte-Carlo number in hover text carries its standard error (SE) and says over what.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dat.figure_layout import for_width, name_panel_titles, rgba, style, tag

from .results import Curves, Surface

LOSS_UNIT = "loss (cross-entropy, nats)"
COLORSCALE = "Viridis"
DIFF_COLORSCALE = "RdBu_r"
PANEL_TITLES = {"none": "without noise"}
# Plain text, no <sub>/<sup>: Plotly sets those at 70 % of the font, under 7 pt at print size.
AXIS = {
    "trio": ("α  (u = w(DAT-A) − w(SGD))", "β  (v = 2 w(DAT-B) − w(DAT-A) − w(SGD))"),
    "free": ("α  (random direction d1)", "β  (random direction d2)"),
}
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
METRIC_UNIT = {"loss": LOSS_UNIT, "accuracy": "accuracy"}
CURVE_X_TITLE = "noise strength α / r  (1 = the device's typical noise norm r)"
MAX_DECADES = 6  # a loss scale wider than this is capped, and its top tick says "≥"
LEVELS = 24      # filled contour bands across the colour range


def panel_title(panel: str) -> str:
    return PANEL_TITLES.get(panel, f"under {panel} noise")


def _screen(fig: go.Figure) -> go.Figure:
    return for_width(fig, "screen")[0]


def _display(names: dict | None, label: str) -> str:
    return (names or {}).get(label, label)


def shared_ending(names: list[str]) -> tuple[list[str], str]:
    """Legend names without the words every one of them ends with, and those words: "SGD-BN digits
    CNN6, 20 epochs" and "DAT-Fast (device-A) digits CNN6, 20 epochs" become "SGD-BN" and
    "DAT-Fast (device-A)", with "digits CNN6, 20 epochs" said once. Names stay as they are when
    fewer than two, or when the short forms would be empty or no longer distinct."""
    words = [n.split() for n in names]
    if len(names) < 2:
        return list(names), ""
    k = 0
    while all(len(w) > k + 1 for w in words) and len({tuple(w[len(w) - k - 1:]) for w in words}) == 1:
        k += 1
    short = [" ".join(w[: len(w) - k]).rstrip(",;:·") for w in words]
    if k == 0 or not all(short) or len(set(short)) != len(short):
        return list(names), ""
    return short, " ".join(words[0][len(words[0]) - k:])


# ----------------------------------------------------------------------------------------------
# Colour scales
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossScale:
    """A logarithmic loss colour scale: colours follow log10(loss) from ``lo`` to ``hi`` (nats);
    losses above ``hi`` (only when the data span more than MAX_DECADES decades) take the top colour."""

    lo: float
    hi: float
    capped: bool

    @property
    def zmin(self) -> float:
        return float(np.log10(self.lo))

    @property
    def zmax(self) -> float:
        return float(np.log10(self.hi))

    def z(self, loss: np.ndarray) -> np.ndarray:
        v = np.asarray(loss, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.isfinite(v), np.log10(np.clip(v, self.lo, self.hi)), np.nan)

    def ticks(self) -> tuple[list[float], list[str]]:
        vals = round_log_ticks(self.lo, self.hi)
        return [float(np.log10(v)) for v in vals], [tick_text(v) for v in vals]

    def colorbar(self, title: str = LOSS_UNIT) -> dict:
        tickvals, ticktext = self.ticks()
        note = f", log scale; top colour: ≥ {tick_text(self.hi)}" if self.capped else ", log scale"
        return dict(title=dict(text=title + note), tickmode="array", tickvals=tickvals, ticktext=ticktext)


def tick_text(v: float) -> str:
    """A round value as a tick label: plain below 10 000, then m·10^k (Unicode superscripts, full size)."""
    if v < 1e4:
        return f"{v:g}"
    m, e = f"{v:.0e}".split("e")
    return (f"{m}·" if m != "1" else "") + "10" + str(int(e)).translate(SUPERSCRIPT)


def round_log_ticks(lo: float, hi: float) -> list[float]:
    """Round values (1-2-5, 1-3 or powers of ten, fewer as the range widens) within [lo, hi]."""
    if not (0 < lo < hi):
        raise ValueError(f"expected 0 < lo < hi, found {lo}, {hi}")
    decades = np.log10(hi / lo)
    mantissas = (1, 2, 5) if decades <= 2.2 else (1, 3) if decades <= 4.5 else (1,)
    out = [m * 10.0 ** e for e in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
           for m in mantissas if lo * (1 - 1e-9) <= m * 10.0 ** e <= hi * (1 + 1e-9)]
    if len(out) < 3 and decades < 1:  # a narrow range: round linear steps (1, 2 or 5 x 10^k) instead
        raw = (hi - lo) / 4
        step = min((m * 10.0 ** np.floor(np.log10(raw)) for m in (1, 2, 5, 10)
                    if m * 10.0 ** np.floor(np.log10(raw)) >= raw), default=raw)
        out = list(np.arange(np.ceil(lo / step) * step, hi * (1 + 1e-9), step))
    return [float(f"{v:.6g}") for v in out]


def loss_scale(*losses: np.ndarray) -> LossScale:
    """One log scale for all the given loss arrays: from their smallest to their largest finite value."""
    finite = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in losses])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if finite.size == 0:
        return LossScale(0.1, 10.0, False)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo * 1.01:
        lo, hi = lo / 1.05, hi * 1.05
    capped = hi > lo * 10.0 ** MAX_DECADES
    return LossScale(lo, lo * 10.0 ** MAX_DECADES if capped else hi, capped)


def colour_range(values: np.ndarray, marker_values=None, clip_quantile: float = 0.9,
                 marker_factor: float = 4.0) -> tuple[float, float]:
    """(min, top) with top = min(q-quantile, marker_factor x the largest loss at a model marker): the
    range around the models' basins. The difference panel of ``comparison_figure`` is shown where
    both losses are at most ``top`` (two losses of hundreds subtracted say nothing the eye can use)."""
    finite = np.asarray(values)[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(np.quantile(finite, clip_quantile))
    if marker_values is not None:
        m = np.asarray(marker_values)[np.isfinite(marker_values)]
        if m.size:
            hi = min(hi, marker_factor * float(m.max()))
    return lo, hi if hi > lo else lo + 1e-12


# ----------------------------------------------------------------------------------------------
# 1D curves (paper Fig. 2)
# ----------------------------------------------------------------------------------------------
def curves_figure(curves: Curves, metric: str = "loss", *, title: str | None = None,
                  names: dict | None = None) -> go.Figure:
    """One panel per device; each model a line (mean over draws) with its band, against α / r, the
    noise strength in units of that device's typical noise norm r on that model (r at 1, dotted).
    A marker with SE bars gives the value at α = r. ``names``: result label -> name shown."""
    if not isinstance(curves, Curves):
        raise TypeError(f"curves must be a Curves result, found {type(curves).__name__}")
    if metric not in METRIC_UNIT:
        raise ValueError(f"metric must be 'loss' or 'accuracy', found {metric!r}")
    values = curves.loss if metric == "loss" else curves.accuracy          # [M, D, draws, A]
    draws = values.shape[2]
    mean = curves.mean(metric)
    se = values.std(axis=2, ddof=1) / np.sqrt(draws) if draws > 1 else np.zeros_like(mean)
    lo, hi = curves.band_limits(metric)
    at = curves.loss_at_typical if metric == "loss" else curves.accuracy_at_typical   # [M, D, draws]
    at_mean = at.mean(axis=2)
    at_se = at.std(axis=2, ddof=1) / np.sqrt(draws) if draws > 1 else np.zeros_like(at_mean)
    band_name = "±1 std over directions" if curves.band == "std" else "10–90 % of directions"
    unit = " nats" if metric == "loss" else ""
    word = "loss" if metric == "loss" else "accuracy"
    fig = make_subplots(rows=1, cols=len(curves.devices), shared_yaxes=True, shared_xaxes="all",
                        subplot_titles=list(curves.devices))
    name_panel_titles(fig, len(curves.devices))
    x = curves.alphas[None, :, :] / curves.typical_norm[:, :, None]     # [M, D, A] in units of r
    # What every model's name shares ("digits CNN6, 20 epochs") is said once, in the legend's title.
    legend_names, shared = shared_ending([_display(names, m) for m in curves.models])
    for j, device in enumerate(curves.devices):
        for i, model in enumerate(curves.models):
            st, name, full = style(i), legend_names[i], _display(names, model)
            xs = x[i, j]
            edge = dict(color=rgba(st["color"], 0.55), width=0.6, dash=st["dash"])
            fig.add_trace(go.Scatter(x=xs, y=hi[i, j], mode="lines", line=edge, hoverinfo="skip",
                                     showlegend=False, legendgroup=model), row=1, col=j + 1)
            fig.add_trace(go.Scatter(x=xs, y=lo[i, j], mode="lines", line=edge, fill="tonexty",
                                     fillcolor=rgba(st["color"], 0.12), hoverinfo="skip", showlegend=False,
                                     legendgroup=model), row=1, col=j + 1)
            custom = np.stack([curves.alphas[j], se[i, j]], axis=1)
            fig.add_trace(go.Scatter(
                x=xs, y=mean[i, j], mode="lines", line=dict(color=st["color"], width=1.6, dash=st["dash"]),
                name=name, legendgroup=model, showlegend=j == 0, customdata=custom,
                hovertemplate=(f"{full} under {device}<br>α / r %{{x:.2f}} (α %{{customdata[0]:.3g}})<br>"
                               f"{word} %{{y:.3g}} ± %{{customdata[1]:.2g}}{unit} (mean ± SE over {draws} "
                               "directions)<extra></extra>")), row=1, col=j + 1)
            fig.add_trace(go.Scatter(
                x=[1.0], y=[at_mean[i, j]], mode="markers", showlegend=False, legendgroup=model,
                marker=dict(color=st["color"], symbol=st["symbol"], size=7, line=dict(color="white", width=0.8)),
                error_y=dict(type="data", array=[at_se[i, j]], color=st["color"], thickness=1, width=3),
                hovertemplate=(f"{full} under {device} at α = r = {curves.typical_norm[i, j]:.3g}<br>{word} "
                               f"{at_mean[i, j]:.3g} ± {at_se[i, j]:.2g}{unit} (mean ± SE over {draws} "
                               "directions)<extra></extra>")), row=1, col=j + 1)
        for v in (-1.0, 1.0):
            fig.add_vline(x=v, line=dict(color="#777", width=0.8, dash="dot"), row=1, col=j + 1)
    finite = x[np.isfinite(x)]
    fig.update_xaxes(range=[float(finite.min()), float(finite.max())], zeroline=False)
    fig.update_xaxes(title_text=CURVE_X_TITLE if len(curves.devices) == 1 else "α / r", row=1, col=1)
    if len(curves.devices) > 1:
        # One axis title for the row, centred under all panels.
        fig.add_annotation(text=CURVE_X_TITLE, xref="paper", yref="paper", x=0.5, y=0, yanchor="top",
                           showarrow=False, name="row-axis-title")
        fig.update_xaxes(title_text=None)
    fig.update_yaxes(title_text=METRIC_UNIT[metric], row=1, col=1)
    if metric == "loss":
        # The loss grows by orders of magnitude away from alpha = 0: a log axis keeps alpha ~ r readable.
        ends = np.concatenate([lo[np.isfinite(lo) & (lo > 0)], hi[np.isfinite(hi) & (hi > 0)]])
        fig.update_yaxes(type="log", range=[np.log10(ends.min()) - 0.05, np.log10(ends.max()) + 0.05],
                         dtick="D2" if np.log10(ends.max() / ends.min()) < 2.5 else 1)
    else:
        fig.update_yaxes(range=[-0.04, 1.04])  # "0" clear of the x axis' first tick label
    fig.update_layout(title=dict(text=title) if title else None,
                      legend=dict(title=dict(text=(f"{shared} · " if shared else "")
                                                  + f"band: {band_name}; marker: at α = r ± SE", side="top")))
    rows = 2 if len(curves.models) > 3 else 1
    tag(fig, "curves", ncols=len(curves.devices), aspect=0.85, legend=True, legend_rows=rows + 1,
        left_em=4.4)
    return _screen(fig)


# ----------------------------------------------------------------------------------------------
# 2D surfaces (paper Fig. 1)
# ----------------------------------------------------------------------------------------------
def _values(surface: Surface, metric: str) -> np.ndarray:
    if metric not in ("loss", "accuracy"):
        raise ValueError(f"metric must be 'loss' or 'accuracy', found {metric!r}")
    return surface.loss if metric == "loss" else surface.accuracy


def _draws(surface: Surface) -> int:
    return int(surface.meta.get("inputs", {}).get("draws", 1) or 1)


def _se(surface: Surface, std: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    """std over the draws / sqrt(draws), [panel, ...]: 0 on the noise-free panel (one exact
    evaluation); NaN where it is unknown (one draw, or a result saved before the std was kept)."""
    draws = _draws(surface)
    if std is None or draws < 2:
        out = np.full(np.shape(like), np.nan)
    else:
        out = np.asarray(std, dtype=np.float64) / np.sqrt(draws)
    for p, panel in enumerate(surface.panels):
        if panel == "none":
            out[p] = 0.0
    return out


def standard_error(surface: Surface, metric: str = "loss") -> np.ndarray:
    """SE of the expected loss (or accuracy) at each grid point: std over the panel's S draws /
    sqrt(S) (0 for the noise-free panel, a single exact evaluation)."""
    std = surface.loss_std if metric == "loss" else surface.accuracy_std
    return _se(surface, std, _values(surface, metric))


def marker_standard_error(surface: Surface, metric: str = "loss") -> np.ndarray:
    """SE [panel, marker] of the loss (or accuracy) at each model's point, as :func:`standard_error`."""
    if metric not in ("loss", "accuracy"):
        raise ValueError(f"metric must be 'loss' or 'accuracy', found {metric!r}")
    std = surface.marker_loss_std if metric == "loss" else surface.marker_accuracy_std
    return _se(surface, std, surface.marker_loss)


def marker_rows(surface: Surface) -> list[dict]:
    """The models' points as table rows: panel, model, alpha, beta, loss and accuracy with their SE
    over the panel's draws (``draws``: S; 0 draws and SE 0 for the noise-free panel's exact value)."""
    se_l, se_a = marker_standard_error(surface, "loss"), marker_standard_error(surface, "accuracy")
    rows = []
    for p, panel in enumerate(surface.panels):
        for j, m in enumerate(surface.markers):
            a, b = surface.markers[m]
            rows.append({"panel": panel, "model": m, "alpha": float(a), "beta": float(b),
                         "loss": float(surface.marker_loss[p, j]), "loss_se": float(se_l[p, j]),
                         "accuracy": float(surface.marker_accuracy[p, j]), "accuracy_se": float(se_a[p, j]),
                         "draws": 0 if panel == "none" else _draws(surface)})
    return rows


def _panel_index(surface: Surface, panel: str | None) -> int:
    if panel is None:
        return 0
    if panel not in surface.panels:
        raise ValueError(f"panel must be one of {list(surface.panels)}, found {panel!r}")
    return surface.panels.index(panel)


def _label_sides(points: list[tuple[float, float]], spans: tuple[float, float]) -> list[tuple[int, int]]:
    """For each marker, the side its label goes (sx, sy in {-1, 0, 1}): away from the markers' centre,
    so that labels of nearby markers do not meet; a lone marker is labelled above."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2) / np.asarray(spans)
    centre = p.mean(axis=0)
    sides = []
    for q in p:
        d = q - centre
        sx = 0 if abs(d[0]) < 0.05 else int(np.sign(d[0]))
        sy = 0 if abs(d[1]) < 0.05 and sx != 0 else 1 if abs(d[1]) < 0.05 else int(np.sign(d[1]))
        sides.append((sx, sy))
    return sides


def _add_markers(fig: go.Figure, surface: Surface, col: int = 1, hover: list[str] | None = None) -> None:
    """Models as white crosses; their names as boxed labels (readable on any colour, also where the
    difference panel is blank), on the side away from the other markers."""
    labels = list(surface.markers)
    xs = [float(surface.markers[m][0]) for m in labels]
    ys = [float(surface.markers[m][1]) for m in labels]
    spans = (float(np.ptp(surface.alphas)) or 1.0, float(np.ptp(surface.betas)) or 1.0)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="models", showlegend=False, hovertext=hover or labels,
                             hovertemplate="%{hovertext}<extra></extra>",
                             marker=dict(color="white", size=8, symbol="x-thin", line=dict(color="black", width=2))),
                  row=1, col=col)
    ref = "" if col == 1 else str(col)
    for (sx, sy), x, y, m in zip(_label_sides(list(zip(xs, ys)), spans), xs, ys, labels):
        fig.add_annotation(x=x, y=y, xref=f"x{ref}", yref=f"y{ref}", text=m, showarrow=False,
                           name=f"marker:{sx}:{sy}:{m}", bgcolor="rgba(255,255,255,0.8)",
                           font=dict(color="black"))


def _pm(value: float, se: float, fmt: str) -> str:
    """``value ± se`` (the SE left out where it was not kept)."""
    return f"{value:{fmt}}" + ("" if not np.isfinite(se) else f" ± {se:.2g}")


def _marker_hover(surface: Surface, p: int) -> list[str]:
    """Each model's point in words: loss and accuracy, each ± its SE over the panel's draws."""
    se_l, se_a = marker_standard_error(surface, "loss")[p], marker_standard_error(surface, "accuracy")[p]
    out = []
    for j, m in enumerate(surface.markers):
        a, b = surface.markers[m]
        text = f"{m}: α {a:.2f}, β {b:.2f}<br>"
        if surface.panels[p] == "none":
            text += (f"loss {surface.marker_loss[p, j]:.3g} nats, accuracy {surface.marker_accuracy[p, j]:.3f} "
                     "(no noise: one exact evaluation)")
        else:
            text += (f"loss {_pm(surface.marker_loss[p, j], se_l[j], '.3g')} nats, accuracy "
                     f"{_pm(surface.marker_accuracy[p, j], se_a[j], '.3f')} (mean ± SE over {_draws(surface)} draws)")
        out.append(text)
    return out


def _map_trace(kind: str, surface: Surface, z: np.ndarray, zmin: float, zmax: float, colorscale, colorbar: dict,
               show_scale: bool, custom: np.ndarray, hover: str):
    common = dict(x=surface.alphas, y=surface.betas, z=z.T, colorscale=colorscale, zmin=zmin, zmax=zmax,
                  colorbar=colorbar, showscale=show_scale, customdata=np.moveaxis(custom, 0, -1).transpose(1, 0, 2),
                  hovertemplate=hover + "<extra></extra>")
    if kind == "contour":
        # Filled bands are drawn as vector paths in SVG / PDF (coloring="heatmap" would embed an image).
        return go.Contour(**common, autocontour=False, line=dict(width=0),
                          contours=dict(coloring="fill", showlines=False, start=zmin, end=zmax,
                                        size=(zmax - zmin) / LEVELS))
    if kind == "heatmap":
        return go.Heatmap(**common)
    raise ValueError(f"kind must be 'contour', 'heatmap' or 'surface3d', found {kind!r}")


def _loss_hover(panel: str, draws: int) -> str:
    if panel == "none":
        return "α %{x:.2f}, β %{y:.2f}<br>loss %{customdata[0]:.3g} nats (no noise: one exact evaluation)"
    return (f"α %{{x:.2f}}, β %{{y:.2f}}<br>loss %{{customdata[0]:.3g}} ± %{{customdata[1]:.2g}} nats "
            f"(mean ± SE over {draws} draws)")


def _panel_trace(kind: str, surface: Surface, p: int, metric: str, scale: LossScale | None, colorbar: dict,
                 show_scale: bool):
    v = _values(surface, metric)[p]
    custom = np.stack([v, standard_error(surface, metric)[p]])
    if metric == "loss":
        return _map_trace(kind, surface, scale.z(v), scale.zmin, scale.zmax, COLORSCALE, colorbar, show_scale,
                          custom, _loss_hover(surface.panels[p], _draws(surface)))
    return _map_trace(kind, surface, v, 0.0, 1.0, COLORSCALE, colorbar, show_scale, custom,
                      _accuracy_hover(surface, p))


def _accuracy_hover(surface: Surface, p: int) -> str:
    hover = "α %{x:.2f}, β %{y:.2f}<br>accuracy %{customdata[0]:.3f}"
    if surface.panels[p] == "none":
        return hover + " (no noise: one exact evaluation)"
    if surface.accuracy_std is None:
        return hover + f" (mean over {_draws(surface)} draws)"
    return hover + f" ± %{{customdata[1]:.2g}} (mean ± SE over {_draws(surface)} draws)"


def _grid_ranges(fig: go.Figure, surface: Surface) -> None:
    """Axes exactly over the grid (annotations would otherwise widen the autorange)."""
    fig.update_xaxes(range=[float(surface.alphas[0]), float(surface.alphas[-1])], zeroline=False, showgrid=False)
    fig.update_yaxes(range=[float(surface.betas[0]), float(surface.betas[-1])], zeroline=False, showgrid=False)


def _plane_axes(surface: Surface) -> tuple[str, str]:
    return AXIS[surface.meta.get("inputs", {}).get("plane", {}).get("kind", "trio")]


def surface_figure(surface: Surface, panel: str | None = None, kind: str = "contour", metric: str = "loss",
                   *, title: str | None = None) -> go.Figure:
    """One panel as a contour map, a heatmap or a 3D surface, with the models marked. The loss colour
    scale (and the 3D height) is the surface's, shared by all its panels."""
    p = _panel_index(surface, panel)
    vals = _values(surface, metric)
    scale = loss_scale(surface.loss, surface.marker_loss) if metric == "loss" else None
    cb = scale.colorbar() if scale else dict(title=dict(text="accuracy"))
    xlab, ylab = _plane_axes(surface)
    if kind == "surface3d":
        return _surface3d(surface, p, metric, scale, cb, title)
    fig = make_subplots(rows=1, cols=1, subplot_titles=[title or panel_title(surface.panels[p])])
    name_panel_titles(fig, 1)
    fig.add_trace(_panel_trace(kind, surface, p, metric, scale, cb, True), row=1, col=1)
    _add_markers(fig, surface, 1, _marker_hover(surface, p))
    fig.update_xaxes(title_text=xlab)
    fig.update_yaxes(title_text=ylab)
    _grid_ranges(fig, surface)
    tag(fig, "panels", ncols=1, aspect=0.75, colorbars="below", left_em=5.0)
    return _screen(fig)


def _surface3d(surface: Surface, p: int, metric: str, scale: LossScale | None, cb: dict, title: str | None):
    v = _values(surface, metric)[p]
    se = standard_error(surface, metric)[p]
    if metric == "loss":
        z, zr, m_z = scale.z(v), [scale.zmin, scale.zmax], scale.z(surface.marker_loss[p])
        tickvals, ticktext = scale.ticks()
        zaxis = dict(title="", range=zr,  # the colour bar names it; a z title is clipped at print size
                      tickmode="array", tickvals=tickvals, ticktext=ticktext)
        hover = _loss_hover(surface.panels[p], _draws(surface))
    else:
        z, zr, m_z = v, [0.0, 1.0], surface.marker_accuracy[p]
        zaxis = dict(title="", range=zr)
        hover = _accuracy_hover(surface, p)
    custom = np.stack([v, se], axis=-1).transpose(1, 0, 2)
    fig = go.Figure(go.Surface(x=surface.alphas, y=surface.betas, z=z.T, colorscale=COLORSCALE, cmin=zr[0],
                               cmax=zr[1], colorbar=cb, customdata=custom, hovertemplate=hover + "<extra></extra>"))
    labels = list(surface.markers)
    lift = 0.0  # labels float at the top of the box, above the surface, so that it does not hide them
    mx, my = [surface.markers[m][0] for m in labels], [surface.markers[m][1] for m in labels]
    top = np.full(len(labels), zr[1] + lift)
    stems = [(x, y, z0, z1) for x, y, z0, z1 in zip(mx, my, m_z, top)]
    fig.add_trace(go.Scatter3d(x=[v for x, _, _, _ in stems for v in (x, x, None)],
                               y=[v for _, y, _, _ in stems for v in (y, y, None)],
                               z=[v for _, _, z0, z1 in stems for v in (z0, z1, None)], mode="lines",
                               line=dict(color="black", width=2), hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter3d(x=mx, y=my, z=top, mode="text", text=labels, textposition="top center",
                               textfont=dict(color="black"), hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter3d(x=mx, y=my, z=m_z, mode="markers",
                               marker=dict(color="white", size=4, line=dict(color="black", width=2)),
                               hovertext=_marker_hover(surface, p),
                               hovertemplate="%{hovertext}<extra></extra>", showlegend=False))
    fig.update_layout(scene=dict(xaxis_title="α", yaxis_title="β", zaxis=zaxis),
                      title=dict(text=title or panel_title(surface.panels[p])))
    tag(fig, "surface3d")
    return _screen(fig)


def fig1_figure(surface: Surface, kind: str = "contour", metric: str = "loss", *, title: str | None = None) -> go.Figure:
    """Paper Fig. 1: the panels side by side on one colour scale, models marked on each."""
    n = len(surface.panels)
    scale = loss_scale(surface.loss, surface.marker_loss) if metric == "loss" else None
    cb = scale.colorbar() if scale else dict(title=dict(text="accuracy"))
    letters = "abcdefghijklmnopqrstuvwxyz"
    fig = make_subplots(rows=1, cols=n, shared_yaxes=True,
                        subplot_titles=[f"({letters[i]}) {panel_title(p)}" for i, p in enumerate(surface.panels)])
    name_panel_titles(fig, n)
    xlab, ylab = _plane_axes(surface)
    for i in range(n):
        fig.add_trace(_panel_trace(kind, surface, i, metric, scale, cb, i == n - 1), row=1, col=i + 1)
        _add_markers(fig, surface, i + 1, _marker_hover(surface, i))
        fig.update_xaxes(title_text=xlab if n == 1 else "α", row=1, col=i + 1)
    fig.update_yaxes(title_text=ylab if n == 1 else "β", row=1, col=1)
    _grid_ranges(fig, surface)
    fig.update_layout(title=dict(text=title) if title else None)
    tag(fig, "panels", ncols=n, aspect=0.8, colorbars="below", left_em=5.0 if n == 1 else 3.2)
    return _screen(fig)


def comparison_figure(surface: Surface, a: str | None = None, b: str | None = None, kind: str = "contour",
                      *, title: str | None = None) -> go.Figure:
    """Devices A and B side by side on one log colour scale, and their difference B − A (diverging,
    centred at 0: red where B's noise costs more than A's), blank where either loss is above the
    basins' range (``colour_range``); the hover gives the difference ± its SE."""
    noisy = [p for p in surface.panels if p != "none"]
    if a is None or b is None:
        if len(noisy) < 2:
            raise ValueError(f"comparison needs two device panels, found {list(surface.panels)}")
        a, b = a or noisy[0], b or noisy[1]
    ia, ib = _panel_index(surface, a), _panel_index(surface, b)
    la, lb = surface.loss[ia], surface.loss[ib]
    scale = loss_scale(la, lb, surface.marker_loss[[ia, ib]])
    top = colour_range(np.stack([la, lb]), surface.marker_loss[[ia, ib]])[1]
    diff = lb - la
    se = standard_error(surface)
    diff_se = np.sqrt(se[ia] ** 2 + se[ib] ** 2)
    shown = np.isfinite(diff) & (np.maximum(la, lb) <= top)
    finite = diff[shown] if shown.any() else diff[np.isfinite(diff)]
    m = float(np.quantile(np.abs(finite), 0.9)) if finite.size else 1.0
    m = m if m > 0 else 1e-12
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, subplot_titles=[a, b, f"{b} − {a}"])
    name_panel_titles(fig, 3)
    draws = _draws(surface)
    ab = _map_trace(kind, surface, scale.z(la), scale.zmin, scale.zmax, COLORSCALE, scale.colorbar(), False,
                    np.stack([la, se[ia]]), _loss_hover(a, draws))
    bb = _map_trace(kind, surface, scale.z(lb), scale.zmin, scale.zmax, COLORSCALE, scale.colorbar(), True,
                    np.stack([lb, se[ib]]), _loss_hover(b, draws))
    bb.uid = "colorbar-ab"
    # Where either loss is off the basins' range the difference says nothing readable (two huge
    # losses subtracted): blank rather than painted at full strength.
    cbd = dict(title=dict(text=f"Δ loss, nats (blank: a loss > {top:.2g})"))
    dd = _map_trace(kind, surface, np.where(shown, diff, np.nan), -m, m, DIFF_COLORSCALE, cbd, True,
                    np.stack([diff, diff_se]),
                    f"α %{{x:.2f}}, β %{{y:.2f}}<br>{b} − {a}: %{{customdata[0]:+.3g}} ± %{{customdata[1]:.2g}} "
                    f"nats (SE over {draws} draws each)")
    dd.uid = "colorbar-diff"
    if kind == "contour":
        dd.contours.update(start=-m, end=m, size=2 * m / 12)
    for c, t in enumerate((ab, bb, dd), start=1):
        fig.add_trace(t, row=1, col=c)
        _add_markers(fig, surface, c, _marker_hover(surface, (ia, ib, ib)[c - 1]) if c < 3 else None)
        fig.update_xaxes(title_text="α", row=1, col=c)
    fig.update_yaxes(title_text="β", row=1, col=1)
    _grid_ranges(fig, surface)
    fig.update_layout(title=dict(text=title) if title else None)
    tag(fig, "panels", ncols=3, aspect=0.8, colorbars="below", left_em=3.2,
        colorbar_spans={"colorbar-ab": [0, 1], "colorbar-diff": [2, 2]})
    return _screen(fig)


def default_figures(result, names: dict | None = None) -> dict[str, go.Figure]:
    """The figures a bundle carries for a result: curves (loss, accuracy) or surfaces (Fig. 1 as
    contours, each panel in 3D, and the A-vs-B comparison when there are two device panels)."""
    if isinstance(result, Curves):
        return {"curves_loss": curves_figure(result, "loss", names=names),
                "curves_accuracy": curves_figure(result, "accuracy", names=names)}
    if not isinstance(result, Surface):
        raise TypeError(f"result must be Curves or Surface, found {type(result).__name__}")
    figs = {"fig1_contour": fig1_figure(result, "contour")}
    for p in result.panels:
        figs[f"surface3d_{p.replace(' ', '_')}"] = surface_figure(result, p, "surface3d")
    if len([p for p in result.panels if p != "none"]) >= 2:
        figs["compare_devices"] = comparison_figure(result)
    return figs
