"""The export panel under every landscape figure: numbers at once, images on request, all as a zip."""

import streamlit as st

from dat.figure_layout import CSS_PX_PER_IN, WIDTHS_IN
from faces.dashboard.helpers import data_files, figure_files, mime_of, zip_files

WIDTH_NAMES = {"single": "single column (3.5 in)", "double": "double column (7.16 in)", "slide": "slide (13.33 in)"}


def export_panel(prefix: str, result, figures: dict, spec, comparison=None, *, stem: str | None = None) -> None:
    """Download buttons for the numbers (CSV / NPZ / reproduce.json), a form that renders the
    figures through Plotly's static export, then buttons for each image and for the whole zip.
    ``prefix`` keeps this page's widget keys apart and names the files unless ``stem`` (a file-name
    part, e.g. ``dat.checkpoint.name_slug`` of the trio's name) does."""
    stem = stem or prefix
    st.subheader("Export")
    # Built once per result and summary, not on every rerun (a view toggle reruns the page). The
    # summary depends on the result and on settings such as the basin threshold: its rows key it.
    key = (id(result), None if comparison is None else repr(getattr(comparison, "rows", comparison)))
    stored = st.session_state.get(f"{prefix}_numbers")
    if stored is None or stored[0] != key:
        stored = (key, data_files(result, spec, comparison))
        st.session_state[f"{prefix}_numbers"] = stored
        st.session_state.pop(f"{prefix}_files", None)  # figure files of an earlier result: gone
    numbers = stored[1]
    for col, (name, data) in zip(st.columns(len(numbers)), numbers.items()):
        col.download_button(name, data, file_name=f"{stem}_{name}", mime=mime_of(name), key=f"dl_{name}")
    with st.form(f"{prefix}_export"):
        width = st.radio("Print width", list(WIDTH_NAMES), index=1, horizontal=True, format_func=WIDTH_NAMES.get)
        formats = st.multiselect("Image formats", ["png", "svg", "pdf"], default=["png", "svg", "pdf"])
        dpi = st.number_input("PNG resolution (dpi)", 72, 1200, 300)
        if st.form_submit_button("Prepare figure files"):
            try:
                with st.spinner("Rendering figures with Plotly's static export..."):
                    st.session_state[f"{prefix}_files"] = figure_files(
                        result, figures, spec=spec, comparison=comparison, width=width, formats=formats,
                        dpi=int(dpi))
                    st.session_state[f"{prefix}_width"] = width
            except (RuntimeError, ValueError) as exc:  # e.g. no Chromium for the static export
                st.error(f"Figure export failed: {exc}")
    files = st.session_state.get(f"{prefix}_files")
    if files:
        st.download_button("Download everything (zip)", zip_files(files), file_name=f"{stem}_bundle.zip",
                           mime="application/zip", key="dl_zip", type="primary")
        images = [n for n in files if n.rsplit(".", 1)[-1] in ("png", "svg", "pdf")]
        for col, name in zip(st.columns(max(len(images), 1)), images):
            col.download_button(name, files[name], file_name=f"{stem}_{name}", mime=mime_of(name), key=f"dl_{name}")
        _preview(files, st.session_state.get(f"{prefix}_width", "double"))


def _preview(files: dict, width: str) -> None:
    """Each exported PNG shown at its print width (on a 96-dpi screen, the size it has on paper)."""
    pngs = [n for n in files if n.endswith(".png")]
    st.markdown(f"**Preview at print size**: {WIDTH_NAMES[width]}")
    if not pngs:
        st.caption("Add PNG to the image formats to see the figures here at their print size.")
        return
    for name in pngs:
        st.image(files[name], caption=name, width=int(round(WIDTHS_IN[width] * CSS_PX_PER_IN)))
