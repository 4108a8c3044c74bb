"""Workspace guards shared by the landscape pages."""

import streamlit as st

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
