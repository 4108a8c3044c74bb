"""Workspace guards and computations with progress, shared by the landscape pages."""

import streamlit as st

from faces.dashboard.helpers import compute_landscape
from faces.dashboard.workspace import Workspace


def trios_or_stop(ws: Workspace, rows: list[dict] | None = None) -> dict:
    """The workspace's trios (folder -> {role: path}, from ``rows`` when the page has listed the
    checkpoints already); with none, say how to make one and stop the page."""
    trios = ws.trios(rows)
    if not trios:
        st.info("No trio of checkpoints (sgd, dat-a, dat-b) yet. Make the demo trio with `dat demo` in a "
                "terminal (or the button on the home page), or train one on the Train page.")
        st.stop()
    return trios


def compute_with_progress(ws: Workspace, spec, unit: str, bar=None, span=(0.0, 1.0), inputs=None):
    """``compute_landscape`` with a progress bar ("{done} of {total} {unit}"). Several computations
    can share one bar, each filling its ``span`` of it; a bar made here is removed when done."""
    own = bar is None
    bar = st.progress(0.0, text="Starting...") if own else bar
    lo, hi = span
    result = compute_landscape(ws, spec, inputs=inputs, progress=lambda done, total: bar.progress(
        lo + (hi - lo) * done / total, text=f"{done} of {total} {unit}"))
    if own:
        bar.empty()
    return result
