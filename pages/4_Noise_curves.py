"""Noise curves (paper Fig. 2): loss along each device's own noise directions, models x devices."""

import streamlit as st

from dat.trio import LABELS
from landscape.defaults import CURVE_DRAWS, CURVE_POINTS, CURVE_SPAN
from faces.dashboard.helpers import device_choices, landscape_spec, model_labels
from faces.dashboard.workspace import Workspace
from landscape.figures import curves_figure
from landscape.summary import compare_devices
from faces.dashboard.widgets.export import export_panel
from faces.dashboard.widgets import landscape_jobs
from faces.dashboard.widgets import form_state as fs

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

BANDS = {"std": "± 1 std", "p10-p90": "10-90 %"}
# The settings survive page switches and are the page's URL (a link to this selection).
form = fs.PageForm("curves", [
    fs.choices("curve_models", "models", list(labels), default),
    fs.choices("curve_devices", "devices", list(choices), ["device-A", "device-B"]),
    fs.integer("curve_points", "points", 5, 121, CURVE_POINTS),
    fs.number("curve_span", "span", 0.5, 20.0, CURVE_SPAN),
    # 20 directions resolve the demo trio's device-to-device differences (2 SE); smaller model-to-model
    # differences get a warning under the summary saying how many draws they would need.
    fs.integer("curve_draws", "draws", 2, 200, CURVE_DRAWS),
    fs.choice("curve_band", "band", list(BANDS), "std"),
    fs.integer("curve_samples", "samples", 0, 100_000, 0),
    fs.integer("curve_seed", "seed", 0, 1_000_000, 0),
    fs.choice("curve_metric", "quantity", ["loss", "accuracy"], "loss"),
])

with st.form("curves_form"):
    picked = st.multiselect("Models (one architecture)", list(labels),
                            format_func=lambda n: f"{labels[n]}  ·  {n}", key="curve_models")
    devices = st.multiselect("Devices", list(choices), key="curve_devices")
    c1, c2, c3 = st.columns(3)
    num_alphas = c1.slider("Points per curve", 5, 121, key="curve_points")
    span = c1.number_input("Half-width of the α grid (in typical noise norms r)", 0.5, 20.0, key="curve_span")
    draws = c2.number_input("Noise directions per device", 2, 200, key="curve_draws",
                            help="More directions shrink the standard errors as 1/√draws.")
    band = c2.selectbox("Band", list(BANDS), format_func=BANDS.get, key="curve_band")
    max_samples = c3.number_input("Training images used (0: all)", 0, 100_000, step=128, key="curve_samples")
    seed = c3.number_input("Seed of the noise draws", 0, 1_000_000, key="curve_seed")
    go = st.form_submit_button("Compute curves", type="primary")
metric = st.radio("Quantity", ["loss", "accuracy"], horizontal=True, key="curve_metric")
form.remember()

if go or form.applied_link:  # a shared link shows its figure (at once when it is in the cache)
    try:
        if not picked or not devices:
            raise ValueError("pick at least one model and one device")
        spec = landscape_spec("curves", {labels[n]: paths[n] for n in picked}, {d: choices[d] for d in devices},
                              num_alphas=int(num_alphas), span=float(span), draws=int(draws), band=band,
                              seed=int(seed), max_samples=int(max_samples) or None)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        st.error(f"Could not compute the curves: {exc}")
    else:
        landscape_jobs.submit(ws, "curves", {"curves": spec},
                              f"noise curves: {len(picked)} models x {len(devices)} devices, {int(draws)} draws")

done = landscape_jobs.result_of(ws, "curves", "curves")
if done is None:
    if landscape_jobs.followed("curves") is None:
        st.info("Pick models and devices, then press **Compute curves**.")
    st.stop()

specs, outputs = done
spec, curves = specs["curves"], outputs["curves"]
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
