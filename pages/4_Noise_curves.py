"""Noise curves (paper Fig. 2): loss along each device's own noise directions, models x devices."""

import streamlit as st

from dat.trio import LABELS
from landscape.defaults import CURVE_DRAWS, CURVE_POINTS, CURVE_SPAN
from faces.dashboard.helpers import device_choices, landscape_spec, model_labels
from faces.dashboard.workspace import Workspace
from landscape.figures import curves_figure
from landscape.summary import compare_devices
from faces.dashboard.widgets.export import export_panel
from faces.dashboard.widgets.workspace import compute_with_progress

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
default = [n for n, lab in labels.items() if lab in LABELS] or list(labels)[:3]
choices = device_choices(ws)

with st.form("curves_form"):
    picked = st.multiselect("Models (one architecture)", list(labels), default=default,
                            format_func=lambda n: f"{labels[n]}  ·  {n}", key="curve_models")
    devices = st.multiselect("Devices", list(choices), default=["device-A", "device-B"], key="curve_devices")
    c1, c2, c3 = st.columns(3)
    num_alphas = c1.slider("Points per curve", 5, 121, CURVE_POINTS, key="curve_points")
    span = c1.number_input("Half-width of the α grid (in typical noise norms r)", 0.5, 20.0, CURVE_SPAN)
    # 20 directions resolve the demo trio's device-to-device differences (2 SE); smaller model-to-model
    # differences get a warning under the summary saying how many draws they would need.
    draws = c2.number_input("Noise directions per device", 2, 200, CURVE_DRAWS, key="curve_draws",
                            help="More directions shrink the standard errors as 1/√draws.")
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
        curves = compute_with_progress(ws, spec, "model-device pairs")
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
# Legends show the models' names without the folder they were trained in, where that stays unique.
short = {m: m.split(" [")[0] for m in curves.models}
names = short if len(set(short.values())) == len(short) else None
figures = {f"curves_{metric}": curves_figure(curves, metric, names=names)}
st.plotly_chart(figures[f"curves_{metric}"], key="curves_figure")
summary = compare_devices(curves)
st.subheader("Summary")
st.caption(f"Monte-Carlo numbers over {curves.loss.shape[2]} noise directions per device; `_se` columns are "
           "their standard errors (std / √draws).")
if summary.warnings:  # differences within 2 standard errors of zero: more draws needed to rank them
    st.warning("Not resolved by these draws:\n" + "\n".join(f"- {m}" for m in summary.warnings))
st.dataframe(summary.rows, hide_index=True)

export_panel("curves", curves, figures, spec, summary)
