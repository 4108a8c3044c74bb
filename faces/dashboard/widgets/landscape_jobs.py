"""Landscape computations as background jobs on the pages: the page's own job (progress, cancel,
failure, resume, result) and the list of every running job in the sidebar of every page.

A page submits its specs with ``faces.dashboard.helpers.submit_landscape`` and follows the job by
its id in ``st.session_state``, which outlives page switches: leaving the page does not stop the
job, and coming back shows its progress or its result.
"""

from __future__ import annotations

import streamlit as st

from dat.errors import UserError
from faces.dashboard import jobs
from faces.dashboard.helpers import submit_landscape
from faces.dashboard.widgets.workspace import resume_button
from faces.dashboard.workspace import Workspace


def _followed_key(page: str) -> str:
    return f"_landscape_job_{page}"


def submit(ws: Workspace, page: str, specs: dict, label: str) -> jobs.Job | None:
    """Submit (or find again) the job for ``specs`` and follow it on this page; None, with the
    reason in red, when it cannot be submitted."""
    try:
        job = submit_landscape(ws, page, specs, label)
    except (UserError, ValueError, TypeError) as exc:
        st.error(f"Not started: {exc}")
        return None
    st.session_state[_followed_key(page)] = job.id
    return job


def followed(page: str) -> jobs.Job | None:
    """The job this page follows in this session (None: none yet, or one the server no longer has)."""
    job_id = st.session_state.get(_followed_key(page))
    if job_id is None:
        return None
    try:
        return jobs.registry().get(job_id)
    except KeyError:
        st.session_state.pop(_followed_key(page), None)
        return None


@st.fragment(run_every=1.0)
def _progress(job_id: str) -> None:
    """The followed job's progress, refreshed every second; the whole page runs again once it ends,
    so that its result (or its error) replaces the bar."""
    job = jobs.registry().get(job_id)
    if not job.active:
        st.rerun()
    st.progress(job.progress, text=f"{job.label}: {job.state} · {job.stage or 'waiting'} · {job.elapsed():.0f} s")
    if job.cancel_requested:
        st.caption("Cancel requested: the computation stops after its current chunk of grid points.")
    elif st.button("Cancel", key=f"cancel_{job.id}"):
        job.cancel()
        st.caption("Cancel requested: the computation stops after its current chunk of grid points.")
    st.caption("The computation runs in the background: you can use other pages and come back.")


def result_of(ws: Workspace, page: str, what: str):
    """Show the state of this page's job and return (its specs, its results), each {name: ...}, once
    it is done (None before). Running: a progress bar that follows it. Failed: its error in red.
    Cancelled or interrupted: a warning and **Resume** (the completed chunks are kept)."""
    job = followed(page)
    if job is not None and job.state == jobs.DONE and job.output is not None:
        return _specs(job), job.output
    if job is None:
        return None
    if job.active:
        _progress(job.id)
        return None
    if job.state == jobs.FAILED:
        st.error(f"Computing the {what} failed: {job.error}")
        return None
    if job.state in (jobs.CANCELLED, jobs.INTERRUPTED):
        why = "was cancelled" if job.state == jobs.CANCELLED else "was interrupted when the server stopped"
        st.warning(f"Computing the {what} {why}. Resume computes only what is missing: completed chunks of "
                   "the grid are kept in the workspace's cache.")
        if resume_button(ws, job):
            st.rerun()
        return None
    return None  # done without a result in memory: not a job this page submitted


def _specs(job: jobs.Job) -> dict:
    """The LandscapeSpecs of a job this server ran (its own description of its work)."""
    from landscape.spec import LandscapeSpec

    return {name: LandscapeSpec.from_dict(d) for name, d in job.spec["specs"].items()}


def _active(ws: Workspace) -> list[jobs.Job]:
    try:
        listed = ws.list_jobs()
    except UserError:  # a damaged jobs file: the home page says so; list this server's jobs
        listed = jobs.registry().jobs(ws.jobs_file)
    return [j for j in listed if j.active]


@st.fragment(run_every=2.0)
def _running(ws: Workspace) -> None:
    active = _active(ws)
    st.markdown("**Running jobs**")
    if not active:
        st.caption("None now.")
        return
    for job in active:
        kind = "landscape" if job.lane == jobs.LANDSCAPE_LANE else "training"
        st.progress(job.progress, text=f"{job.label} ({kind}, {job.state})")


def running_jobs(ws: Workspace) -> None:
    """Every running or queued job of the workspace (training and landscapes) in the sidebar,
    refreshed every 2 s while there are any; drawn by app.py on every page."""
    if not _active(ws):
        return
    with st.sidebar:
        _running(ws)
