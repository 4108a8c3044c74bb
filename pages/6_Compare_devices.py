"""Compare devices: A and B on one colour scale, their difference, and summary numbers per model."""

import streamlit as st

from dat.checkpoint import name_slug
from dat.trio import LABEL_OF, LABELS, ROLES
from landscape.defaults import CURVE_DRAWS, CURVE_POINTS, SURFACE_DRAWS, SURFACE_RESOLUTION
from faces.dashboard.helpers import COMPARE_PAGE, device_choices, landscape_spec, trio_labels, trio_spec
from faces.dashboard.workspace import Workspace
from landscape.figures import comparison_figure
from landscape.summary import compare_devices
from faces.dashboard.widgets.export import export_panel
from faces.dashboard.widgets import form_state as fs, landscape_jobs
from faces.dashboard.widgets.workspace import trios_or_stop

st.set_page_config(page_title="Compare devices", layout="wide")
st.title("Compare devices")
st.markdown(
    "The expected loss on the SGD / DAT-A / DAT-B plane under device A and under device B, on one "
    "colour scale, and their difference B − A (red: B's noise costs more). The table gives, per model "
    "and device, the loss increase at the device's typical noise norm, the basin width along its "
    "noise directions, and the loss increase at the model's own point of the plane.")

ws = Workspace.default()
rows = ws.list_checkpoints()  # read every header once per run
trios = trios_or_stop(ws, rows)
trio_names = trio_labels(trios, rows)  # each trio by its name

choices = device_choices(ws)
labels = list(choices)
groups = list(trios)
# The settings survive page switches and are the page's URL (a link to this selection).
form = fs.PageForm("compare", [
    fs.choice("compare_trio", "trio", groups, groups[0]),
    fs.choice("compare_dev_a", "a", labels, "device-A"),
    fs.choice("compare_dev_b", "b", labels, "device-B"),
    fs.integer("compare_points", "points_alpha", 3, 61, SURFACE_RESOLUTION[0]),
    fs.integer("compare_points_beta", "points_beta", 3, 61, SURFACE_RESOLUTION[1]),
    fs.integer("compare_draws", "draws", 1, 200, SURFACE_DRAWS),
    # 20 directions resolve the demo trio's device-to-device differences at 2 SE (see the warnings for the rest).
    fs.integer("compare_curve_draws", "curve_draws", 2, 200, CURVE_DRAWS),
    fs.integer("compare_samples", "samples", 0, 100_000, 512),
    fs.number("compare_threshold", "threshold", 0.001, 10.0, 0.1),
    fs.choice("compare_view", "view", ["contour", "heatmap"], "contour"),
])
with st.form("compare_form"):
    group = st.selectbox("Trio", groups, format_func=trio_names.get, key="compare_trio")
    c1, c2, c3 = st.columns(3)
    dev_a = c1.selectbox("Device A", labels, key="compare_dev_a")
    dev_b = c1.selectbox("Device B", labels, key="compare_dev_b")
    n_alpha = c2.slider("Grid points along α", 3, 61, key="compare_points")
    n_beta = c2.slider("Grid points along β", 3, 61, key="compare_points_beta")
    draws = c2.number_input("Noise draws per grid point (S)", 1, 200, key="compare_draws",
                            help="Each point's mean carries its standard error, std / √S.")
    curve_draws = c2.number_input("Noise directions per curve", 2, 200, key="compare_curve_draws",
                                  help="The summary numbers carry standard errors, std / √directions.")
    max_samples = c3.number_input("Training images used (0: all)", 0, 100_000, step=128, key="compare_samples")
    threshold = c3.number_input("Basin threshold (loss above the clean loss, nats)", 0.001, 10.0,
                                key="compare_threshold")
    kind = c3.radio("View", ["contour", "heatmap"], horizontal=True, key="compare_view")
    go = st.form_submit_button("Compare", type="primary")
form.remember()

if go or form.applied_link:  # a shared link shows its figure (at once when it is in the cache)
    try:
        if dev_a == dev_b:
            raise ValueError(f"expected two different devices, found {dev_a!r} twice")
        devices = {dev_a: choices[dev_a], dev_b: choices[dev_b]}  # the devices' own names, as on every page
        common = dict(max_samples=int(max_samples) or None)
        surface_spec = trio_spec(trios[group], devices, resolution=(n_alpha, n_beta), draws=int(draws), **common)
        curves_spec = landscape_spec("curves", {LABEL_OF[r]: trios[group][r] for r in ROLES},
                                     devices, num_alphas=CURVE_POINTS, draws=int(curve_draws), **common)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        st.error(f"Could not compare the devices: {exc}")
    else:
        # The trio, data and devices are loaded once for both (the job shares them).
        landscape_jobs.submit(ws, COMPARE_PAGE, {"surface": surface_spec, "curves": curves_spec},
                              f"compare {dev_a} and {dev_b}: {n_alpha} x {n_beta} grid, {int(draws)} draws per "
                              f"point, {int(curve_draws)} directions per curve")
        st.session_state["comparison_name"] = trio_names[group]

done = landscape_jobs.result_of(ws, COMPARE_PAGE, "comparison")
if done is None:
    if landscape_jobs.followed(COMPARE_PAGE) is None:
        st.info("Pick a trio and two devices, then press **Compare**.")
    st.stop()

specs, outputs = done
spec, surface, curves = specs["surface"], outputs["surface"], outputs["curves"]
summary_draws = specs["curves"].draws
try:
    summary = compare_devices(curves, surface, threshold=float(threshold))
except ValueError as exc:
    st.error(f"Could not summarise the comparison: {exc}")
    st.stop()
dev_a, dev_b = [p for p in surface.panels if p != "none"][:2]
figures = {"compare_devices": comparison_figure(surface, dev_a, dev_b, kind)}
st.plotly_chart(figures["compare_devices"], key="compare_figure")

st.subheader("Summary numbers")
st.caption(f"Loss increase at each device's typical noise norm, mean ± standard error over {summary_draws} noise "
           "directions (the same draws for every model, so differences are paired).")
pairs = {p["what"]: p for p in summary.separation}
c = st.columns(3)
for col, model in zip(c, LABELS):
    pair = pairs.get(f"{model}, {dev_b} − {dev_a}")
    if pair is not None:
        col.metric(f"{model}: loss increase under {dev_b} − under {dev_a}",
                   f"{pair['difference']:+.3f} ± {pair['se']:.3f}",
                   help="nats, at each device's typical noise norm; ± one standard error")
if summary.warnings:  # differences within 2 standard errors of zero: more draws needed to rank them
    st.warning("Not resolved by these draws:\n" + "\n".join(f"- {m}" for m in summary.warnings))
st.dataframe(summary.rows, hide_index=True)

# -- Curvature prediction next to the measured increase (landscape.sharpness.predicted_vs_measured,
# the recipe of `dat landscape compare`, computed by the compare job); its numbers go into summary.csv.
st.subheader("Predicted from curvature against measured")
st.caption("Predicted increase: the device sharpness (1/2) tr(H Σ_w) (plus the device's mean shift, if it "
           "has one), by Hutchinson's method with probes drawn from the device, ± standard error over "
           "probes. Measured: the loss increase at the typical noise norm, ± standard error over draws. "
           "Both in nats, on the same training images.")
if outputs.get("prediction_error"):
    st.error(f"Could not predict the increase from curvature: {outputs['prediction_error']}")
prediction = outputs.get("prediction")  # made by the compare job (faces.dashboard.helpers._prediction)
if prediction is not None:
    st.dataframe([{"model": r["model"], "device": r["device"],
                   "predicted (nats)": f"{r['predicted_increase']:.4f} ± {r['predicted_increase_se']:.4f}",
                   "measured (nats)": f"{r['measured_increase']:.4f} ± {r['measured_increase_se']:.4f}",
                   "probes": r["probes"], "draws": r["draws"]} for r in prediction.rows],
                 hide_index=True, key="compare_prediction_table")
    st.markdown(prediction.sentence())
    summary = summary.with_prediction(prediction)

export_panel("compare", surface, figures, spec, summary,
             stem=name_slug(st.session_state.get("comparison_name", ""), "compare"))
