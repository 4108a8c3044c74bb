"""Noise curves (paper Fig. 2): loss along each device's own noise directions, models x devices."""

import streamlit as st

from dat.ui_helpers import (compute_landscape, data_files, device_choices, figure_files, landscape_spec, mime_of,
                            model_labels, zip_files)
from dat.workspace import Workspace
from landscape.figures import curves_figure
from landscape.summary import compare_devices

st.set_page_config(page_title="Noise curves", layout="wide")
st.title("Noise curves")
st.markdown(
    "g(α) = mean loss of f(w + α d) with d = δ / ‖δ‖ the direction of a draw δ = max|W| · η of a "
    "device's noise: several draws give a mean curve and a band. The dot on each curve is the device's "
    "typical noise norm r, where programming actually puts the weights (paper Fig. 2).")

ws = Workspace.default()
rows = ws.list_checkpoints()
if not rows:
    st.info("No checkpoints yet. Make the demo trio with `dat demo` in a terminal (or the button on "
            "the home page), or train models on the Train page.")
    st.stop()
labels = model_labels(rows)
paths = {row["name"]: row["path"] for row in rows}
default = [n for n, lab in labels.items() if lab in ("SGD", "DAT-A", "DAT-B")] or list(labels)[:3]
choices = device_choices(ws)

with st.form("curves_form"):
    picked = st.multiselect("Models (one architecture)", list(labels), default=default,
                            format_func=lambda n: f"{labels[n]}  ·  {n}", key="curve_models")
    devices = st.multiselect("Devices", list(choices), default=["device-A", "device-B"], key="curve_devices")
    c1, c2, c3 = st.columns(3)
    num_alphas = c1.slider("Points per curve", 5, 121, 41, key="curve_points")
    span = c1.number_input("Half-width of the α grid (in typical noise norms r)", 0.5, 20.0, 3.0)
    draws = c2.number_input("Noise directions per device", 2, 200, 10, key="curve_draws")
    band = c2.selectbox("Band", ["std", "p10-p90"], format_func={"std": "± 1 std", "p10-p90": "10-90 %"}.get)
    max_samples = c3.number_input("Training images used (0: all)", 0, 100_000, 0, step=128)
    seed = c3.number_input("Seed of the noise draws", 0, 1_000_000, 0)
    go = st.form_submit_button("Compute curves", type="primary")

if go:
    try:
        if not picked or not devices:
            raise ValueError("pick at least one model and one device")
        spec = landscape_spec("curves", {labels[n]: paths[n] for n in picked}, {d: choices[d] for d in devices},
                              num_alphas=int(num_alphas), span=float(span), draws=int(draws), band=band,
                              seed=int(seed), max_samples=int(max_samples) or None)
        bar = st.progress(0.0, text="Evaluating curves...")
        curves = compute_landscape(ws, spec, progress=lambda done, total: bar.progress(
            done / total, text=f"{done} of {total} model-device pairs"))
        bar.empty()
    except (ValueError, TypeError, FileNotFoundError) as exc:
        st.error(f"Could not compute the curves: {exc}")
    else:
        st.session_state["curves"] = (spec, curves)
        st.session_state.pop("curves_files", None)

if "curves" not in st.session_state:
    st.info("Pick models and devices, then press **Compute curves**.")
    st.stop()

spec, curves = st.session_state["curves"]
metric = st.radio("Quantity", ["loss", "accuracy"], horizontal=True, key="curve_metric")
figures = {f"curves_{metric}": curves_figure(curves, metric)}
st.plotly_chart(figures[f"curves_{metric}"], key="curves_figure")
summary = compare_devices(curves)
st.subheader("Summary")
st.dataframe(summary.rows, hide_index=True)

st.subheader("Export")
numbers = data_files(curves, spec, summary)
for col, (name, data) in zip(st.columns(len(numbers)), numbers.items()):
    col.download_button(name, data, file_name=f"curves_{name}", mime=mime_of(name), key=f"dl_{name}")
with st.form("curves_export"):
    width = st.radio("Column width", ["single", "double"], index=1, horizontal=True)
    formats = st.multiselect("Image formats", ["png", "svg", "pdf"], default=["png", "svg", "pdf"])
    dpi = st.number_input("PNG resolution (dpi)", 72, 1200, 300)
    if st.form_submit_button("Prepare figure files"):
        try:
            with st.spinner("Rendering figures with Plotly's static export..."):
                st.session_state["curves_files"] = figure_files(curves, figures, spec=spec, comparison=summary,
                                                                width=width, formats=formats, dpi=int(dpi))
        except (RuntimeError, ValueError) as exc:
            st.error(f"Figure export failed: {exc}")
files = st.session_state.get("curves_files")
if files:
    st.download_button("Download everything (zip)", zip_files(files), file_name="curves_bundle.zip",
                       mime="application/zip", key="dl_zip", type="primary")
    images = [n for n in files if n.rsplit(".", 1)[-1] in ("png", "svg", "pdf")]
    for col, name in zip(st.columns(max(len(images), 1)), images):
        col.download_button(name, files[name], file_name=name, mime=mime_of(name), key=f"dl_{name}")
