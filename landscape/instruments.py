"""Figures and paper bundles of the research instruments: transfer matrix, correlation ablation,
accuracy against time since programming, device sharpness.

Figures take a result object (``dat.transfer.TransferResult``, ``dat.aging.AgingResult``,
``landscape.sharpness.SharpnessResult``) and compute nothing beyond what they plot. Colours are the
Okabe-Ito palette (colour-blind safe); every uncertainty drawn says in its legend what it is over.
Bundles are built by ``landscape.export.bundle_files`` (figure images, numbers.csv, numbers.npz,
reproduce.json); the reproduction record here names the command that regenerates the numbers.
"""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go

from dat.errors import expected
from dat.figure_layout import rgba, tag

from . import export

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
DASHES = ["solid", "dash", "dot", "dashdot", "longdash"]
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "star"]


def _style(fig: go.Figure, title: str | None = None) -> go.Figure:
    fig.update_layout(template="plotly_white", font=dict(family="Arial, Helvetica, sans-serif", size=12),
                      title=dict(text=title) if title else None, margin=dict(l=60, r=20, t=50 if title else 30, b=50))
    return fig


# -- transfer matrix -------------------------------------------------------------------------------
def transfer_figure(result, *, title: str | None = None) -> go.Figure:
    """Heat map of test accuracy (%), rows = training, columns = test device; each cell says the
    mean over seeds, ± the half-width of its 95 % interval over seeds (Student t; "-" with one seed)
    and the 1st-percentile chip over the draws of all seeds, on three short lines that print at the
    figure's font size (>= 7 pt) inside a single-column cell. The cells carry the numbers, so there is
    no colour bar (the colour repeats them for the eye); the hover adds the interval's ends and the
    5th percentile, which the numbers file also holds."""
    z = np.zeros((len(result.rows), len(result.columns)))
    text = [[""] * len(result.columns) for _ in result.rows]
    hover = [[""] * len(result.columns) for _ in result.rows]
    for i, r in enumerate(result.rows):
        for j, c in enumerate(result.columns):
            s = result.cell(r, c)
            z[i, j] = 100 * s["mean"]
            one_seed = np.isnan(s["ci95_low"])
            half = "" if one_seed else f" ± {100 * (s['ci95_high'] - s['ci95_low']) / 2:.1f}"
            text[i][j] = f"{z[i, j]:.1f}<br>{half.strip() or '-'}<br>p1 {100 * s['p1']:.1f}"
            ci = "no interval (one seed)" if one_seed else f"95 % CI [{100 * s['ci95_low']:.1f}, {100 * s['ci95_high']:.1f}]"
            hover[i][j] = f"{z[i, j]:.1f} %, {ci}<br>worst chips: p1 {100 * s['p1']:.1f}, p5 {100 * s['p5']:.1f}"
    fig = go.Figure(go.Heatmap(z=z, x=list(result.columns), y=list(result.rows), text=text, texttemplate="%{text}",
                               customdata=hover, colorscale="Cividis", showscale=False,
                               hovertemplate="train %{y}<br>test %{x}<br>%{customdata}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="trained on")
    fig.update_xaxes(title="tested on", side="bottom")
    n_seeds = len(result.seeds)
    sub = (f"mean ± 95 % CI over {n_seeds} seeds" if n_seeds > 1 else "one seed") + "; p1: worst 1 % of chips"
    fig = _style(fig, title or f"Transfer matrix<br><sup>{sub}</sup>")
    # Room on the left for the longest row label ("DAT-Full on device-A:diagonal") and the axis
    # title, and on the right for the colour bar, in print layouts; long names break at " on " and ":".
    labels = [r.replace(" on ", " on<br>") for r in result.rows]
    fig.update_yaxes(tickvals=list(result.rows), ticktext=labels)
    fig.update_xaxes(tickvals=list(result.columns), ticktext=[c.replace(":", ":<br>") for c in result.columns],
                     tickangle=0)
    tag(fig, "lines", left_em=0.55 * max(len(line) for r in labels for line in r.split("<br>")) + 2.5,
        aspect=0.85 * len(result.rows) / max(1, len(result.columns)), min_plot_em=5.2 * len(result.rows),
        tick_lines=2 if any(":" in c for c in result.columns) else 1)
    return fig


def ablation_figure(rows: list[dict], *, title: str | None = None) -> go.Figure:
    """Correlation ablation (``dat.transfer.correlation_ablation``): DAT and the baseline, each
    trained and tested on the full device and on its twins, with 95 % intervals over seeds."""
    if not rows:
        raise expected("ablation rows", "at least one device with its twin in the transfer run", "none")
    fig = go.Figure()
    x = [r["variant"] for r in rows]
    for key, name, colour in (("baseline", "SGD-BN", OKABE_ITO[1]), ("dat", "DAT (trained on it)", OKABE_ITO[0])):
        y = np.array([100 * r[f"{key}_acc"] for r in rows])
        lo = np.array([100 * r[f"{key}_ci95_low"] for r in rows])
        hi = np.array([100 * r[f"{key}_ci95_high"] for r in rows])
        err = dict(type="data", array=np.nan_to_num(hi - y), arrayminus=np.nan_to_num(y - lo), visible=True)
        fig.add_bar(x=x, y=y, name=name, marker_color=colour, error_y=err)
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.25))
    tag(fig, "lines", legend=True)
    fig.update_yaxes(title="test accuracy under that device (%)")
    return _style(fig, title or "Does correlation matter?<br><sup>full device vs its twins; bars: 95 % CI over seeds</sup>")


# -- accuracy against time ---------------------------------------------------------------------------
def aging_figure(result, metric: str = "acc", *, title: str | None = None) -> go.Figure:
    """Accuracy (or loss) against time since programming on a log axis: one line per model (colour)
    and device (dash), the mean over seeds and draws; the band spans the 5th to 95th percentile of
    all draws of all seeds (accuracy) or the range over seeds (loss); for accuracy a line of open
    triangles in the model's colour and the device's dash marks the 1st-percentile chip (the worst
    chips: p5 is the band's lower edge)."""
    if metric not in ("acc", "loss"):
        raise expected("metric", "acc or loss", repr(metric))
    fig = go.Figure()
    t = result.times
    for i, m in enumerate(result.models):
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        for j, d in enumerate(result.devices):
            name = f"{m} · {d}"
            if metric == "acc":
                vals = 100 * result.acc[i, j].reshape(len(t), -1)
                mean, lo, hi = vals.mean(1), np.percentile(vals, 5, axis=1), np.percentile(vals, 95, axis=1)
            else:
                vals = result.loss[i, j]
                mean, lo, hi = vals.mean(1), vals.min(1), vals.max(1)
            fig.add_scatter(x=np.concatenate([t, t[::-1]]), y=np.concatenate([hi, lo[::-1]]), fill="toself", mode="lines",
                            fillcolor=rgba(colour, 0.12), line=dict(width=0, color=rgba(colour, 0.35)),
                            hoverinfo="skip", showlegend=False,
                            legendgroup=name)
            fig.add_scatter(x=t, y=mean, mode="lines+markers", name=name, legendgroup=name,
                            line=dict(color=colour, dash=DASHES[j % len(DASHES)]))
            if metric == "acc":
                # The worst chips in the model's colour and the device's dash, marked by open triangles.
                fig.add_scatter(x=t, y=np.percentile(vals, 1, axis=1), mode="lines+markers", name=f"{name} p1",
                                legendgroup=name, showlegend=False,
                                line=dict(color=colour, dash=DASHES[j % len(DASHES)]),
                                marker=dict(symbol="triangle-down-open", color=colour),
                                hovertemplate=f"{name}<br>p1 %{{y:.1f}} %<extra></extra>")
    fig.update_xaxes(type="log", title="time since programming", tickvals=list(t), ticktext=list(result.time_labels))
    band = ("band: p5-p95, ▽: p1, the worst 1 % of chips (over draws and seeds)" if metric == "acc"
            else "band: range over seeds")
    fig.update_yaxes(title="test accuracy (%)" if metric == "acc" else "test loss (cross-entropy, nats)")
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    tag(fig, "lines", legend=True)  # print layouts keep room for the legend under the axis
    what = "Accuracy" if metric == "acc" else "Loss"
    return _style(fig, title or f"{what} against time since programming<br><sup>{band}</sup>")


# -- device sharpness --------------------------------------------------------------------------------
def sharpness_figure(result, *, title: str | None = None) -> go.Figure:
    """Measured loss increase at the typical noise norm against the device sharpness
    (1/2) tr(H Sigma_w): one marker per model (colour) and device (symbol), error bars one standard
    error (probes; draws); Spearman's rank correlation in the title."""
    fig = go.Figure()
    models = list(dict.fromkeys(r["model"] for r in result.rows))
    devices = list(dict.fromkeys(r["device"] for r in result.rows))
    for r in result.rows:
        i, j = models.index(r["model"]), devices.index(r["device"])
        fig.add_scatter(x=[r["sharpness"]], y=[r["measured_increase"]], mode="markers", name=f"{r['model']} · {r['device']}",
                        marker=dict(color=OKABE_ITO[i % len(OKABE_ITO)], symbol=SYMBOLS[j % len(SYMBOLS)], size=10),
                        error_x=dict(type="data", array=[r["se"]], visible=True),
                        error_y=dict(type="data", array=[r["measured_se"]], visible=True))
    xs = [r["sharpness"] for r in result.rows] + [r["measured_increase"] for r in result.rows]
    lo, hi = min(xs + [0.0]), max(xs + [1e-12])
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="#999999", dash="dot"), name="y = x",
                    showlegend=False)  # named in the axis title: one legend row fewer
    fig.update_xaxes(title="device sharpness ½ tr(H Σ<sub>w</sub>) (nats; bars ±1 SE)")
    fig.update_yaxes(title="measured loss increase (nats; dotted: y = x)")
    rho = result.correlation["sharpness"]
    rho_text = "n/a (< 3 pairs)" if np.isnan(rho["spearman"]) else f"{rho['spearman']:.2f} (p = {rho['p_value']:.2g}, {rho['pairs']} pairs)"
    fig.update_layout(legend=dict(orientation="h", y=-0.3))
    tag(fig, "lines", legend=True)
    return _style(fig, title or f"Sharpness vs loss increase, Spearman ρ = {rho_text}")


def default_figures(result, ablation_rows=None) -> dict[str, go.Figure]:
    kind = getattr(result, "kind", None)
    if kind == "transfer":
        figs = {"transfer_matrix": transfer_figure(result)}
        if ablation_rows:
            figs["correlation_ablation"] = ablation_figure(ablation_rows)
        return figs
    if kind == "aging":
        return {"accuracy_vs_time": aging_figure(result, "acc"), "loss_vs_time": aging_figure(result, "loss")}
    if kind == "sharpness":
        return {"device_sharpness": sharpness_figure(result)}
    raise expected("instrument result", "a transfer, aging or sharpness result", type(result).__name__)


def bundle_files(result, *, command: str, figures: dict | None = None, formats=export.IMAGE_FORMATS + ("csv", "npz"),
                 widths=("single", "double"), dpi: int = 300, extra: dict[str, str] | None = None) -> dict[str, bytes]:
    """The paper bundle of an instrument result, built by ``landscape.export.bundle_files``; its
    reproduce.json names ``command``, the CLI line that regenerates the numbers, and the inputs.
    ``extra``: further CSV tables {file name: text} (e.g. the correlation ablation)."""
    files = export.bundle_files(result, figures=default_figures(result) if figures is None else figures,
                                formats=formats, widths=widths, dpi=dpi)
    for name, text in (extra or {}).items():
        files[name] = text.encode()
    record = json.loads(files["reproduce.json"])
    record["files"] = sorted(files)
    record["spec"] = {"instrument": result.kind, "command": command}
    record["how_to_reproduce"] = f"run `{command}` (its inputs and hashes are under 'inputs')"
    files["reproduce.json"] = json.dumps(record, indent=1).encode()
    return files


def export_bundle(result, folder, *, command: str, **kwargs) -> list:
    """Write ``bundle_files`` into ``folder`` (each file atomically); returns the paths."""
    from pathlib import Path

    from dat.fileio import atomic_write_bytes

    folder = Path(folder)
    out = []
    for name, data in bundle_files(result, command=command, **kwargs).items():
        out.append(atomic_write_bytes(folder / name, data))
    return out
