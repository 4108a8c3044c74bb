"""Workspace guards shared by the landscape pages, and the Resume button of a stopped job."""

import streamlit as st

from dat.errors import UserError
from faces.dashboard import jobs
from faces.dashboard.helpers import resume_job
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


def resume_button(ws: Workspace, job: jobs.Job) -> bool:
    """A **Resume** button for a cancelled or interrupted job (training or landscape); True once the
    job was resumed, and an error in red when it could not be."""
    if not (job.resumable and st.button("Resume", key=f"resume_{job.id}")):
        return False
    try:
        resume_job(ws, job.id)
    except (UserError, TypeError) as exc:
        st.error(f"Not resumed: {exc}")
        return False
    return True
