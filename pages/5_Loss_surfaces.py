"""Loss surfaces (paper Fig. 1): the plane through SGD, DAT-A and DAT-B, without noise and under A and B."""

import streamlit as st

from dat.checkpoint import name_slug
from dat.trio import ROLES, TITLE_OF
from landscape.defaults import SURFACE_ALPHA_RANGE, SURFACE_BETA_RANGE, SURFACE_DRAWS, SURFACE_RESOLUTION
from faces.dashboard.helpers import device_choices, model_labels, trio_labels, trio_role_choices, trio_spec
from faces.dashboard.workspace import Workspace
from landscape.figures import fig1_figure, marker_rows, surface_figure
from faces.dashboard.widgets.export import export_panel
from faces.dashboard.widgets import form_state as fs, landscape_jobs
from faces.dashboard.widgets.workspace import trios_or_stop

st.set_page_config(page_title="Loss surfaces", layout="wide")
st.title("Loss surfaces")
st.markdown(
    "g(α, β) = mean loss of f(w<sub>SGD</sub> + α u + β v) with u = w<sub>DAT-A</sub> − w<sub>SGD</sub> and "
    "v = 2 w<sub>DAT-B</sub> − w<sub>DAT-A</sub> − w<sub>SGD</sub>: SGD sits at (0, 0), DAT-A at (1, 0) and "
    "DAT-B at (0.5, 0.5). Panels: without noise, and the expected loss under device A's and device B's "
    "noise (paper Fig. 1).", unsafe_allow_html=True)

ws = Workspace.default()
rows = ws.list_checkpoints()  # read every header once per run
trios = trios_or_stop(ws, rows)

names = {row["name"]: row["path"] for row in rows}
groups = list(trios)
choices = device_choices(ws)
labels = list(choices)
VIEWS = {"contour": "contour", "heatmap": "heatmap", "surface3d": "3D"}
# The settings survive page switches and are the page's URL (a link to this selection).
form = fs.PageForm("surface", [
    fs.choice("surface_trio", "trio", groups, groups[0]),
    fs.choice("surface_dev_a", "a", labels, "device-A"),
    fs.choice("surface_dev_b", "b", labels, "device-B"),
    fs.integer("surface_points_alpha", "points_alpha", 3, 61, SURFACE_RESOLUTION[0]),
    fs.integer("surface_points_beta", "points_beta", 3, 61, SURFACE_RESOLUTION[1]),
    fs.integer("surface_draws", "draws", 1, 200, SURFACE_DRAWS),
    fs.integer("surface_samples", "samples", 0, 100_000, 512),
    fs.interval("surface_alpha", "alpha", -2.0, 3.0, tuple(SURFACE_ALPHA_RANGE)),
    fs.interval("surface_beta", "beta", -2.0, 3.0, tuple(SURFACE_BETA_RANGE)),
    fs.integer("surface_seed", "seed", 0, 1_000_000, 0),
    fs.choice("surface_view", "view", list(VIEWS), "contour"),
    fs.choice("surface_metric", "quantity", ["loss", "accuracy"], "loss"),
])

model_names, trio_names = model_labels(rows), trio_labels(trios, rows)
shown = {n: f"{model_names[n]}  ·  {n}" for n in names}  # each checkpoint by its name and file
group = st.selectbox("Trio", groups, format_func=trio_names.get, key="surface_trio")
options = trio_role_choices(rows, trios[group])  # only checkpoints that can share this trio's plane
form.restore([fs.choice(f"{group}_{role}", role, options,
                        next(n for n, p in names.items() if p == trios[group][role])) for role in ROLES])
cols = st.columns(3)
picked = {}
for col, role in zip(cols, ROLES):
    picked[role] = names[col.selectbox(TITLE_OF[role], options, format_func=shown.get, key=f"{group}_{role}")]

with st.form("surface_form"):
    c1, c2, c3 = st.columns(3)
    dev_a = c1.selectbox("Device A", labels, key="surface_dev_a")
    dev_b = c1.selectbox("Device B", labels, key="surface_dev_b")
    n_alpha = c2.slider("Grid points along α", 3, 61, key="surface_points_alpha")
    n_beta = c2.slider("Grid points along β", 3, 61, key="surface_points_beta")
    draws = c2.number_input("Noise draws per grid point (S)", 1, 200, key="surface_draws",
                            help="The hover gives each point's standard error, std / √S.")
    max_samples = c2.number_input("Training images used (0: all)", 0, 100_000, step=128, key="surface_samples",
                                  help="A subset keeps a fine grid quick; the JSON records the choice.")
    a_lo, a_hi = c3.slider("α range", -2.0, 3.0, step=0.1, key="surface_alpha")
    b_lo, b_hi = c3.slider("β range", -2.0, 3.0, step=0.1, key="surface_beta")
    seed = c3.number_input("Seed of the noise draws", 0, 1_000_000, key="surface_seed")
    go = st.form_submit_button("Compute surface", type="primary")
kind = st.radio("View", list(VIEWS), horizontal=True, format_func=VIEWS.get, key="surface_view")
metric = st.radio("Quantity", ["loss", "accuracy"], horizontal=True, key="surface_metric")
form.remember()

if go or form.applied_link:  # a shared link shows its figure (at once when it is in the cache)
    try:
        if dev_a == dev_b:
            raise ValueError(f"expected two different devices, found {dev_a!r} twice")
        # Panels carry the devices' own names, as on every other page.
        spec = trio_spec(picked, {dev_a: choices[dev_a], dev_b: choices[dev_b]},
                         resolution=(n_alpha, n_beta), draws=int(draws), seed=int(seed),
                         alpha_range=(a_lo, a_hi), beta_range=(b_lo, b_hi),
                         max_samples=int(max_samples) or None)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        st.error(f"Could not compute the surface: {exc}")
    else:
        landscape_jobs.submit(ws, "surface", {"surface": spec},
                              f"loss surface: {n_alpha} x {n_beta} grid, S = {int(draws)}")
        st.session_state["surface_name"] = trio_names[group]

done = landscape_jobs.result_of(ws, "surface", "surface")
if done is None:
    if landscape_jobs.followed("surface") is None:
        st.info("Pick the three checkpoints and the devices, then press **Compute surface** "
                f"(on the demo trio, {SURFACE_RESOLUTION[0]} x {SURFACE_RESOLUTION[1]} points take well under a "
                "minute and are cached).")
    st.stop()

specs, outputs = done
spec, surface = specs["surface"], outputs["surface"]
if kind == "surface3d":
    figures = {f"surface3d_{p.replace(' ', '_')}": surface_figure(surface, p, "surface3d", metric)
               for p in surface.panels}
    for col, (name, fig) in zip(st.columns(len(figures)), figures.items()):
        col.plotly_chart(fig, key=name)
else:
    figures = {f"fig1_{kind}_{metric}": fig1_figure(surface, kind, metric)}
    st.plotly_chart(next(iter(figures.values())), key="fig1")
cached = "from the cache" if surface.meta.get("cache", {}).get("hit") else "computed now"
st.caption(f"{len(surface.alphas)} x {len(surface.betas)} grid, {spec.draws} draws per point, {cached}. "
           "The hover gives each point's expected loss ± its standard error over the draws.")

st.subheader("Loss at the models")
st.caption(f"Expected loss and accuracy under each device's noise at each model's point: mean of {spec.draws} "
           "draws ± its standard error (std / √draws); without noise one exact evaluation (SE 0).")
st.dataframe(marker_rows(surface), hide_index=True)

export_panel("surface", surface, figures, spec, stem=name_slug(st.session_state.get("surface_name", ""), "surface"))
