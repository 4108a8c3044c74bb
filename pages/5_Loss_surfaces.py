"""Loss surfaces (paper Fig. 1): the plane through SGD, DAT-A and DAT-B, without noise and under A and B."""

import streamlit as st

from dat.trio import ROLES, TITLE_OF
from landscape.defaults import SURFACE_ALPHA_RANGE, SURFACE_BETA_RANGE, SURFACE_DRAWS, SURFACE_RESOLUTION
from faces.dashboard.helpers import device_choices, trio_spec
from faces.dashboard.workspace import Workspace
from landscape.figures import fig1_figure, surface_figure
from faces.dashboard.widgets.export import export_panel
from faces.dashboard.widgets.workspace import compute_with_progress, trios_or_stop

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
group = st.selectbox("Trio", groups, format_func=lambda g: g or "demo (checkpoints/)")
cols = st.columns(3)
picked = {}
for col, role in zip(cols, ROLES):
    default = next(n for n, p in names.items() if p == trios[group][role])
    picked[role] = names[col.selectbox(TITLE_OF[role], list(names), index=list(names).index(default),
                                       key=f"{group}_{role}")]

choices = device_choices(ws)
labels = list(choices)
with st.form("surface_form"):
    c1, c2, c3 = st.columns(3)
    dev_a = c1.selectbox("Device A", labels, index=labels.index("device-A"))
    dev_b = c1.selectbox("Device B", labels, index=labels.index("device-B"))
    n_alpha = c2.slider("Grid points along α", 3, 61, SURFACE_RESOLUTION[0], key="surface_points_alpha")
    n_beta = c2.slider("Grid points along β", 3, 61, SURFACE_RESOLUTION[1], key="surface_points_beta")
    draws = c2.number_input("Noise draws per grid point (S)", 1, 200, SURFACE_DRAWS,
                            help="The hover gives each point's standard error, std / √S.")
    max_samples = c2.number_input("Training images used (0: all)", 0, 100_000, 512, step=128,
                                  help="A subset keeps a fine grid quick; the JSON records the choice.")
    a_lo, a_hi = c3.slider("α range", -2.0, 3.0, SURFACE_ALPHA_RANGE, step=0.1)
    b_lo, b_hi = c3.slider("β range", -2.0, 3.0, SURFACE_BETA_RANGE, step=0.1)
    seed = c3.number_input("Seed of the noise draws", 0, 1_000_000, 0)
    go = st.form_submit_button("Compute surface", type="primary")

if go:
    try:
        if dev_a == dev_b:
            raise ValueError(f"expected two different devices, found {dev_a!r} twice")
        # Panels carry the devices' own names, as on every other page.
        spec = trio_spec(picked, {dev_a: choices[dev_a], dev_b: choices[dev_b]},
                         resolution=(n_alpha, n_beta), draws=int(draws), seed=int(seed),
                         alpha_range=(a_lo, a_hi), beta_range=(b_lo, b_hi),
                         max_samples=int(max_samples) or None)
        surface = compute_with_progress(ws, spec, "grid points evaluated")
    except (ValueError, TypeError, FileNotFoundError) as exc:
        st.error(f"Could not compute the surface: {exc}")
    else:
        st.session_state["surface"] = (spec, surface)
        st.session_state.pop("surface_files", None)

if "surface" not in st.session_state:
    st.info("Pick the three checkpoints and the devices, then press **Compute surface** "
            f"(on the demo trio, {SURFACE_RESOLUTION[0]} x {SURFACE_RESOLUTION[1]} points take well under a minute "
            "and are cached).")
    st.stop()

spec, surface = st.session_state["surface"]
kind = st.radio("View", ["contour", "heatmap", "surface3d"], horizontal=True,
                format_func={"contour": "contour", "heatmap": "heatmap", "surface3d": "3D"}.get)
metric = st.radio("Quantity", ["loss", "accuracy"], horizontal=True)
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
st.caption(f"Expected loss under each device's noise, mean of {spec.draws} draws at the model's point "
           "(its standard error is not kept for the markers; the Noise curves and Compare pages give it).")
st.dataframe([{"panel": p, **{m: float(surface.marker_loss[i, j]) for j, m in enumerate(surface.markers)}}
              for i, p in enumerate(surface.panels)], hide_index=True)

export_panel("surface", surface, figures, spec)
