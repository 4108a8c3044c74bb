"""Compare devices: A and B on one colour scale, their difference, and summary numbers per model."""

import streamlit as st

from faces.dashboard.helpers import SURFACE_LABELS, TRIO_ROLES, device_choices, landscape_spec, trio_spec
from faces.dashboard.workspace import Workspace
from landscape.figures import comparison_figure
from landscape.spec import load_inputs
from landscape.summary import compare_devices
from faces.dashboard.widgets.export import export_panel
from faces.dashboard.widgets.workspace import compute_with_progress, trios_or_stop

st.set_page_config(page_title="Compare devices", layout="wide")
st.title("Compare devices")
st.markdown(
    "The expected loss on the SGD / DAT-A / DAT-B plane under device A and under device B, on one "
    "colour scale, and their difference B − A (red: B's noise costs more). The table gives, per model "
    "and device, the loss increase at the device's typical noise norm, the basin width along its "
    "noise directions, and the loss increase at the model's own point of the plane.")

ws = Workspace.default()
trios = trios_or_stop(ws)

choices = device_choices(ws)
labels = list(choices)
with st.form("compare_form"):
    group = st.selectbox("Trio", list(trios), format_func=lambda g: g or "demo (checkpoints/)")
    c1, c2, c3 = st.columns(3)
    dev_a = c1.selectbox("Device A", labels, index=labels.index("device-A"))
    dev_b = c1.selectbox("Device B", labels, index=labels.index("device-B"))
    resolution = c2.slider("Grid points per axis", 3, 61, 21, key="compare_points")
    # 16 resolve the demo trio's device-to-device differences at 2 SE (see the warnings for the rest).
    draws = c2.number_input("Noise draws (S per point, directions per curve)", 2, 200, 16, key="compare_draws",
                            help="The summary numbers carry standard errors, std / √draws.")
    max_samples = c3.number_input("Training images used (0: all)", 0, 100_000, 512, step=128)
    threshold = c3.number_input("Basin threshold (loss above the clean loss, nats)", 0.001, 10.0, 0.1)
    kind = c3.radio("View", ["contour", "heatmap"], horizontal=True)
    go = st.form_submit_button("Compare", type="primary")

if go:
    try:
        if dev_a == dev_b:
            raise ValueError(f"expected two different devices, found {dev_a!r} twice")
        devices = {dev_a: choices[dev_a], dev_b: choices[dev_b]}  # the devices' own names, as on every page
        common = dict(draws=int(draws), max_samples=int(max_samples) or None)
        surface_spec = trio_spec(trios[group], devices, resolution=(resolution, resolution), **common)
        curves_spec = landscape_spec("curves", {SURFACE_LABELS[r]: trios[group][r] for r in TRIO_ROLES},
                                     devices, num_alphas=41, **common)
        bar = st.progress(0.0, text="Evaluating the plane...")
        inputs = load_inputs(surface_spec)  # the trio, data and devices, loaded once for both
        surface = compute_with_progress(ws, surface_spec, "plane points", bar, (0.0, 0.8), inputs)
        curves = compute_with_progress(ws, curves_spec, "model-device pairs for the curves", bar, (0.8, 1.0), inputs)
        bar.empty()
        summary = compare_devices(curves, surface, threshold=float(threshold))
    except (ValueError, TypeError, FileNotFoundError) as exc:
        st.error(f"Could not compare the devices: {exc}")
    else:
        st.session_state["comparison"] = (surface_spec, surface, summary)
        st.session_state.pop("compare_files", None)

if "comparison" not in st.session_state:
    st.info("Pick a trio and two devices, then press **Compare**.")
    st.stop()

spec, surface, summary = st.session_state["comparison"]
dev_a, dev_b = [p for p in surface.panels if p != "none"][:2]
figures = {"compare_devices": comparison_figure(surface, dev_a, dev_b, kind)}
st.plotly_chart(figures["compare_devices"], key="compare_figure")

st.subheader("Summary numbers")
st.caption(f"Loss increase at each device's typical noise norm, mean ± standard error over {spec.draws} noise "
           "directions (the same draws for every model, so differences are paired).")
pairs = {p["what"]: p for p in summary.separation}
c = st.columns(3)
for col, model in zip(c, ("SGD", "DAT-A", "DAT-B")):
    pair = pairs.get(f"{model}, {dev_b} − {dev_a}")
    if pair is not None:
        col.metric(f"{model}: loss increase under {dev_b} − under {dev_a}",
                   f"{pair['difference']:+.3f} ± {pair['se']:.3f}",
                   help="nats, at each device's typical noise norm; ± one standard error")
if summary.warnings:  # differences within 2 standard errors of zero: more draws needed to rank them
    st.warning("Not resolved by these draws:\n" + "\n".join(f"- {m}" for m in summary.warnings))
st.dataframe(summary.rows, hide_index=True)

# -- Curvature prediction next to the measured increase (landscape.sharpness.predicted_vs_measured,
# the recipe of `dat landscape compare`); its numbers go into the export's summary.csv.
st.subheader("Predicted from curvature against measured")
st.caption("Predicted increase: the device sharpness (1/2) tr(H Σ_w) (plus the device's mean shift, if it "
           "has one), by Hutchinson's method with probes drawn from the device, ± standard error over "
           "probes. Measured: the loss increase at the typical noise norm, ± standard error over draws. "
           "Both in nats, on the same training images.")
stored_prediction = st.session_state.get("compare_prediction")
if stored_prediction is None or stored_prediction[0] != id(summary):
    try:
        from landscape.sharpness import predicted_vs_measured

        with st.spinner("Estimating the device sharpness of each model..."):
            stored_prediction = (id(summary), predicted_vs_measured(spec, summary, cache=ws.cache_dir / "landscape"))
    except (ValueError, TypeError, FileNotFoundError) as exc:
        st.error(f"Could not predict the increase from curvature: {exc}")
        stored_prediction = (id(summary), None)
    st.session_state["compare_prediction"] = stored_prediction
if stored_prediction[1] is not None:
    prediction = stored_prediction[1]
    st.dataframe([{"model": r["model"], "device": r["device"],
                   "predicted (nats)": f"{r['predicted_increase']:.4f} ± {r['predicted_increase_se']:.4f}",
                   "measured (nats)": f"{r['measured_increase']:.4f} ± {r['measured_increase_se']:.4f}",
                   "probes": r["probes"], "draws": r["draws"]} for r in prediction.rows],
                 hide_index=True, key="compare_prediction_table")
    st.markdown(prediction.sentence())
    summary = summary.with_prediction(prediction)

export_panel("compare", surface, figures, spec, summary)
