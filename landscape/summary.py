"""Device comparison numbers: how much each device's noise costs each model, and how wide its basin is.

Definitions (docs/landscape.md states them with the same words):
- loss increase at the typical noise norm: mean over draws of g(r) - g(0), where r = sqrt(E||delta||^2)
  is the device's typical noise norm on that model and g runs along each draw's own unit direction;
- basin width: the mean curve's interval around alpha = 0 on which g(alpha) <= g(0) + threshold,
  with the two crossings found by linear interpolation between grid points; ``censored`` says an end
  of the alpha grid was reached before the curve rose that far (the width is then a lower bound).
  It is given in weight units and in units of r, which is comparable across devices.
- accuracy at the typical noise norm: the mean over draws and the worst chips, its 1st and 5th
  percentile over the draws (each draw one programmed chip);
- with a surface: at each model's marker, the expected loss under the device minus the noise-free loss
  (``surface_loss_increase``, with its SE over the surface's draws).
- with ``Comparison.with_prediction`` (``landscape.sharpness.predicted_vs_measured``): the device
  sharpness (1/2) tr(H Sigma_w) beside each measured increase, and their rank correlation;
- every Monte-Carlo number comes with its standard error (``_se``: sample std over the draws /
  sqrt(draws)); ``separation`` says which compared differences the draws resolve (|d| >= 2 SE).
"""

from __future__ import annotations

import numpy as np

from .results import Comparison, Curves, Surface


def _crossing(a0: float, g0: float, a1: float, g1: float, level: float) -> float:
    return a0 + (level - g0) * (a1 - a0) / (g1 - g0)


def basin_width(alphas: np.ndarray, curve: np.ndarray, clean: float, threshold: float) -> tuple[float, float, bool]:
    """(left, right, censored) ends of the connected interval around 0 where curve <= clean + threshold."""
    level = clean + threshold
    a = np.asarray(alphas, dtype=np.float64)
    g = np.asarray(curve, dtype=np.float64)
    ends, censored = [], False
    for side in (-1, 1):
        idx = np.flatnonzero(side * a > 0)
        idx = idx[np.argsort(side * a[idx])]       # walk outward from 0
        prev_a, prev_g, end = 0.0, clean, None
        for i in idx:
            if not g[i] <= level:                  # NaN counts as "out of the basin"
                end = _crossing(prev_a, prev_g, a[i], g[i], level) if np.isfinite(g[i]) else prev_a
                break
            prev_a, prev_g = a[i], g[i]
        if end is None:
            end, censored = prev_a, True
        ends.append(end)
    return ends[0], ends[1], censored


SEPARATION_Z = 2.0  # a difference is resolved when |d| >= 2 standard errors (about 95 % two-sided)


def compare_devices(curves: Curves, surface: Surface | None = None, *, threshold: float = 0.1) -> Comparison:
    """Per model and device: loss increase at the typical noise norm and basin width (see module doc)."""
    if not isinstance(curves, Curves):
        raise TypeError(f"curves must be a landscape Curves result, found {type(curves).__name__}")
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive loss difference, found {threshold}")
    mean = curves.mean("loss")
    rows = []
    for i, model in enumerate(curves.models):
        for j, device in enumerate(curves.devices):
            r = float(curves.typical_norm[i, j])
            left, right, censored = basin_width(curves.alphas[j], mean[i, j], float(curves.clean_loss[i]), threshold)
            inc = curves.loss_at_typical[i, j] - curves.clean_loss[i]
            std = float(inc.std(ddof=1)) if inc.size > 1 else 0.0
            row = {"model": model, "device": device, "typical_norm": r,
                   "clean_loss": float(curves.clean_loss[i]),
                   "loss_increase_at_typical": float(inc.mean()),
                   "loss_increase_at_typical_se": std / np.sqrt(inc.size),
                   "loss_increase_at_typical_std": std, "draws": int(inc.size),
                   "accuracy_drop_at_typical": float(curves.clean_accuracy[i] - curves.accuracy_at_typical[i, j].mean()),
                   **_chips(curves.accuracy_at_typical[i, j]),
                   "basin_left": left, "basin_right": right, "basin_width": right - left,
                   "basin_width_over_typical": (right - left) / r, "basin_censored": censored}
            if surface is not None:
                row["surface_loss_increase"] = _surface_increase(surface, model, device)
                row["surface_loss_increase_se"] = _surface_increase_se(surface, model, device)
            rows.append(row)
    meta = {"curves": curves.meta.get("inputs", {}), "threshold": threshold,
            "surface": None if surface is None else surface.meta.get("inputs", {})}
    return Comparison(rows, float(threshold), meta, separation(curves))


def _chips(per_draw: np.ndarray) -> dict:
    """Accuracy at the typical noise norm over the draws (each draw one chip): the mean and the worst
    chips, its 1st and 5th percentile (``dat.chips``)."""
    from dat.chips import chip_summary

    c = chip_summary(per_draw)
    return {"accuracy_at_typical": c["mean"], "accuracy_at_typical_p1": c["p1"], "accuracy_at_typical_p5": c["p5"]}


def _draws_to_separate(d: float, sd: float) -> int | None:
    """Draws at which 2 SE = |d| for a difference with per-draw std ``sd`` (None: d = 0)."""
    if d == 0:
        return None
    return max(2, int(np.ceil((SEPARATION_Z * sd / abs(d)) ** 2)))


def separation(curves: Curves) -> list[dict]:
    """Can the draws tell the compared numbers apart? For the loss increase at the typical noise norm:
    every pair of models under each device, and each model under every pair of devices. Both are
    paired by draw index (the models share a device's draws; the devices' draws come from one seed),
    so the SE is that of the per-draw differences: std / sqrt(draws), valid whether or not the
    paired draws are correlated. Each entry: what, difference, se, separated (|d| >= 2 SE),
    draws_needed (draws at which the observed |d| would be 2 SE), message."""
    if not isinstance(curves, Curves):
        raise TypeError(f"curves must be a landscape Curves result, found {type(curves).__name__}")
    inc = curves.loss_at_typical - curves.clean_loss[:, None, None]            # [M, D, draws]
    n = inc.shape[2]
    out = []

    def entry(what: str, d: float, se: float, sd: float) -> dict:
        ok = n > 1 and abs(d) >= SEPARATION_Z * se
        need = _draws_to_separate(d, sd) if n > 1 else None
        msg = (f"{what}: {d:+.3g} ± {se:.2g} nats (SE over {n} draws) is "
               + ("resolved" if ok else f"within {SEPARATION_Z:g} SE of zero: the draws cannot tell them apart"
                  + (f"; about {need} draws would resolve a difference this size" if need else "")))
        return {"what": what, "difference": d, "se": se, "separated": bool(ok), "draws": n,
                "draws_needed": need, "message": msg}

    def paired(what: str, diff: np.ndarray) -> dict:
        sd = float(diff.std(ddof=1)) if n > 1 else float("inf")
        return entry(what, float(diff.mean()), sd / np.sqrt(n), sd)

    for j, device in enumerate(curves.devices):
        for a in range(len(curves.models)):
            for b in range(a + 1, len(curves.models)):
                out.append(paired(f"under {device}, {curves.models[b]} − {curves.models[a]}", inc[b, j] - inc[a, j]))
    for i, model in enumerate(curves.models):
        for a in range(len(curves.devices)):
            for b in range(a + 1, len(curves.devices)):
                out.append(paired(f"{model}, {curves.devices[b]} − {curves.devices[a]}", inc[i, b] - inc[i, a]))
    return out


def _surface_increase(surface: Surface, model: str, device: str) -> float:
    """Expected loss under ``device`` minus noise-free loss at ``model``'s marker (NaN if not on it)."""
    if model not in surface.markers or device not in surface.panels or "none" not in surface.panels:
        return float("nan")
    m = list(surface.markers).index(model)
    return float(surface.marker_loss[surface.panels.index(device), m] - surface.marker_loss[surface.panels.index("none"), m])


def _surface_increase_se(surface: Surface, model: str, device: str) -> float:
    """SE of :func:`_surface_increase`: the marker's std over the surface's draws / sqrt(draws) (the
    noise-free loss is exact); NaN when not on the surface, with one draw, or not kept."""
    draws = int(surface.meta.get("inputs", {}).get("draws", 1) or 1)
    std = surface.marker_loss_std
    if std is None or draws < 2 or model not in surface.markers or device not in surface.panels:
        return float("nan")
    return float(std[surface.panels.index(device), list(surface.markers).index(model)] / np.sqrt(draws))
