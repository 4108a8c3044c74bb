"""Worst chips: a noisy accuracy summarised over its draws, each draw one programmed chip.

A mean alone hides the chips a manufacturer must still ship. ``chip_summary`` gives, for the
per-draw accuracies of one model under one device, the mean, its standard error over draws, and the
1st and 5th percentiles over draws (numpy's linear interpolation between order statistics; with R
draws the 1st percentile is interpolated between the two worst chips, so it needs R >= 100 to be a
true 1-in-100 chip and is otherwise an optimistic estimate of it).
"""

from __future__ import annotations

import math

import numpy as np

from dat.errors import expected

PERCENTILES = (1.0, 5.0)


def chip_summary(values) -> dict:
    """{"mean", "se", "p1", "p5", "draws"} of per-draw values (e.g. ``acc_per_draw`` of
    ``dat.evaluate.evaluate``). ``se`` is std / sqrt(R) over draws (0 for one draw)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise expected("per-draw values", "a non-empty array of finite numbers", f"{v.size} values"
                       + ("" if v.size == 0 else f", {int((~np.isfinite(v)).sum())} not finite"))
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
    p1, p5 = (float(np.percentile(v, q)) for q in PERCENTILES)
    return {"mean": float(v.mean()), "se": se, "p1": p1, "p5": p5, "draws": int(v.size)}
