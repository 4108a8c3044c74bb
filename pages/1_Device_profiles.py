"""Device profiles: presets, edited parameters or fitted measurements; device A and B side by side."""

import dataclasses

import streamlit as st

from dat.errors import UserError
from faces.dashboard.helpers import (MAX_MEASUREMENT_MB, OTHER_TIME, PARAMETER_LABELS, TIME_PRESETS, device_choices,
                            fit_measurements, fit_sentence, fit_summary, load_device, time_choice,
                            time_since_programming)
from faces.dashboard.workspace import Workspace

st.set_page_config(page_title="Device profiles", layout="wide")
st.title("Device profiles")
st.markdown(
    "A device's noise is a multivariate normal N(mu, Sigma) over the cells of a crossbar tile "
    "(word lines are rows, bit lines columns; values are fractions of g_max). Pick what devices A and "
    "B are, change a preset's parameters, or fit a device from your own repeated programming maps.")

from dat.noise.crossbar import KERNELS, CrossbarParams  # noqa: E402 (numpy only)

ws = Workspace.default()
FITTED = "fitted from the upload (unsaved)"
if "saved_message" in st.session_state:  # the confirmation of a save, shown after the re-listing rerun
    st.success(st.session_state.pop("saved_message"))

with st.sidebar:
    st.header("View settings")
    tile = st.selectbox("Tile size (cells per side)", [16, 32, 64], index=1,
                        help="Fitted devices are shown on their measured tile shape.")
    num_maps = st.slider("Sampled noise maps per device", 1, 4, 3)
    window = st.slider("Sigma window (cells)", 16, 512, 128, step=16,
                       help="The top-left block of Sigma: the first cells in row-major order.")
    k = st.number_input("k (eigenpairs kept by DAT-Fast)", 1, 200, 10)
    k_max = st.number_input("Eigenvalues shown", 10, 200, 50, step=10)
    seed = st.number_input("Seed of the sampled maps", 0, 10_000, 0)


# -- measurements ---------------------------------------------------------------------------------
with st.expander("Fit a device from measurements (.npz or .csv)"):
    st.markdown("Upload repeated programming maps of one tile: an array `maps` of shape "
                "[n_samples, rows, cols] in a .npz, or a .csv with one sample per line (rows*cols "
                "values, row-major) and an optional first line `# rows=R cols=C`.")
    upload = st.file_uploader("Measurement file", type=["npz", "csv"], key="measurements",
                              max_upload_size=MAX_MEASUREMENT_MB)
    estimator = st.selectbox("Shrinkage estimator", ["ledoitwolf", "oas"])
    if upload is not None and st.button("Fit", key="fit"):
        try:
            fitted = fit_measurements(upload.name, upload.getvalue(), estimator=estimator, k=int(k))
        except UserError as exc:
            st.error(f"Could not fit a device from {upload.name}: {exc}")
        else:
            st.session_state["fitted_device"] = fitted
            st.session_state["fitted_summary"] = fit_summary(fitted)
            st.success(f"{fit_sentence(fitted)} Pick '{FITTED}' for device A or B below.")
    if "fitted_summary" in st.session_state:
        st.markdown("**The fit**")
        st.table(st.session_state["fitted_summary"])


# -- choosing devices A and B -----------------------------------------------------------------------
choices = device_choices(ws)
options = list(choices) + ([FITTED] if "fitted_device" in st.session_state else [])


def parameter_form(slot: str, label: str, device: CrossbarParams) -> CrossbarParams:
    """A form over every CrossbarParams field; returns the edited device (kept in the session)."""
    key = f"edited_{slot}"
    with st.expander(f"Change device {slot}'s parameters"):
        with st.form(f"params_{slot}"):
            values = {}
            for f in dataclasses.fields(CrossbarParams):
                current = getattr(device, f.name)
                text = PARAMETER_LABELS[f.name]
                if f.name == "t_seconds":
                    choices_t = list(TIME_PRESETS) + [OTHER_TIME]
                    t_choice = st.selectbox("time since programming", choices_t,
                                            index=choices_t.index(time_choice(current)),
                                            key=f"{slot}_{label}_t_choice",
                                            help="Programming noise grows and the mean drifts with time.")
                    t_other = st.number_input("other time since programming (s, >= 1)", min_value=1.0,
                                              value=float(current), format="%.0f", key=f"{slot}_{label}_t_other")
                elif f.name == "name":
                    values[f.name] = st.text_input(text, value=f"{current}-edited", key=f"{slot}_{label}_name")
                elif f.name == "kernel":
                    values[f.name] = st.selectbox(text, KERNELS, index=KERNELS.index(current),
                                                  key=f"{slot}_{label}_kernel")
                else:
                    # Keys include the picked device, so that another pick refills the form.
                    values[f.name] = st.number_input(text, value=float(current), format="%.4f",
                                                     key=f"{slot}_{label}_{f.name}")
            if st.form_submit_button("Apply"):
                try:
                    values["t_seconds"] = time_since_programming(t_choice, float(t_other))
                    st.session_state[key] = CrossbarParams(**values)
                except (ValueError, TypeError) as exc:
                    st.error(f"Invalid parameters: {exc}")
                else:
                    st.success(f"Applied: device {slot} is now '{values['name']}' at "
                               f"{values['t_seconds']:g} s after programming.")
        if key in st.session_state and st.button("Back to the unedited device", key=f"reset_{slot}"):
            del st.session_state[key]
    return st.session_state.get(key, device)


devices, device_columns = {}, {}
columns = st.columns(2)
for slot, col, default in (("A", columns[0], "device-A"), ("B", columns[1], "device-B")):
    with col:
        st.subheader(f"Device {slot}")
        label = st.selectbox(f"Device {slot}", options,
                             index=options.index(default) if default in options else 0, key=f"choice_{slot}")
        if label == FITTED:
            device = st.session_state["fitted_device"]
        else:
            try:
                device = load_device(choices[label])
            except UserError as exc:  # a broken file in profiles/: say so, keep the other device
                st.error(f"Could not load {label}: {exc}")
                continue
            if st.session_state.get(f"base_{slot}") != label:  # a new pick drops old edits
                st.session_state.pop(f"edited_{slot}", None)
                st.session_state[f"base_{slot}"] = label
        if isinstance(device, CrossbarParams):
            device = parameter_form(slot, label, device)
            st.caption("stds at the chosen time (fraction of g_max): " +
                       ", ".join(f"{n} {v:.4f}" for n, v in device.stds().items()))
        devices[slot], device_columns[slot] = device, col

if not devices:
    st.info("Pick a device that loads for A or B to see its noise.")
    st.stop()

# The noise model's libraries (torch) load here, after the page's forms are drawn: on a fresh server
# the user sees and can change the devices while the imports (seconds) run.
from dat import profile_figures as pf  # noqa: E402
from dat.noise.dense import DenseDevice  # noqa: E402

for slot, device in devices.items():
    if isinstance(device, DenseDevice):
        rows, cols = pf.dense_grid(device.n)
        device_columns[slot].caption(f"A dense device: its n = {device.n} values in their own order, shown as a "
                                     f"{rows} x {cols} grid (the tile size does not apply).")


# Each device's profile on the chosen tile is one object shared by every section, session and rerun:
# its eigenpairs (the slow part: a dense eigen-decomposition and canonical bases of tied groups) are
# computed once for the spectrum, the captured variance and both low-rank factors. Each section's
# numbers are cached on what they depend on, so changing the seed does not redo the spectrum; the
# cheap sections are drawn before the eigen-decomposition starts.
@st.cache_resource(max_entries=16, show_spinner=False)
def bound_profile(_device, key: str, tile: int):
    """The device bound to one tile x tile crossbar (``key``: its content hash)."""
    return pf.tile_profile(_device, (tile, tile))


@st.cache_data(max_entries=16, show_spinner="Sampling the noise and forming Sigma...")
def noise_views(_device, key: str, tile: int, num: int, window: int, seed: int) -> dict:
    """The sampled maps, the Sigma window and the correlation profile of one device."""
    profile = bound_profile(_device, key, tile)
    return {"maps": pf.noise_maps(profile, num=num, seed=seed), "sigma": pf.sigma_window(profile, window),
            "corr": pf.correlation_profile(profile), "n": profile.n}


@st.cache_data(max_entries=16, show_spinner="Computing Sigma's eigen-spectrum...")
def spectrum_views(_device, key: str, tile: int, k: int, k_max: int) -> dict:
    profile = bound_profile(_device, key, tile)
    return {"spectrum": profile.spectrum(min(k_max, profile.n)),
            "captured": profile.captured_variance(min(k, profile.n))}


@st.cache_data(max_entries=16, show_spinner="Computing the loss-relevant low rank...")
def captured_both(_device, key: str, tile: int, k: int) -> dict:
    """Plain and loss-relevant top-k on one tile whose bit lines are a classifier's outputs."""
    return bound_profile(_device, key, tile).captured(k)


@st.cache_resource(max_entries=32, show_spinner=False)
def figure(kind: str, key: tuple, _data, **options):
    """A figure of this page, built once per (kind, key): ``key`` names the devices, their profile
    hashes and the settings the data came from; plotly layout work is not redone on each rerun. A
    resource, not data: the one Figure object is shared (nothing changes it), since unpickling a
    cached Figure revalidates it (about 0.3 s a rerun for this page's six)."""
    return getattr(pf, f"{kind}_figure")(_data, **options)


hashes = {slot: pf.tile_profile(device, (tile, tile)).content_hash() for slot, device in devices.items()}
results = {slot: noise_views(device, hashes[slot], int(tile), int(num_maps), int(window), int(seed))
           for slot, device in devices.items()}
settings = (tuple(hashes.items()), int(tile), int(num_maps), int(window), int(seed))

st.header("Sampled noise maps on one tile")
st.plotly_chart(figure("noise_maps", settings, {f"device {s}": r["maps"] for s, r in results.items()}),
                key="maps_figure")

st.header("Sigma (a window) on one colour scale")
zmax = max(float(abs(r["sigma"]).max()) for r in results.values())
for col, (slot, r) in zip(st.columns(2), results.items()):
    col.plotly_chart(figure("sigma", settings + (slot,), r["sigma"], title=f"device {slot}", zmax=zmax),
                     key=f"sigma_{slot}")

st.header("Correlation against cell distance")
st.plotly_chart(figure("correlation", settings, {f"device {s}": r["corr"] for s, r in results.items()}),
                key="corr_figure")

st.header("Eigen-spectrum and captured variance")
spectra = {slot: spectrum_views(device, hashes[slot], int(tile), int(k), int(k_max))
           for slot, device in devices.items()}
st.plotly_chart(figure("spectrum", (tuple(hashes.items()), int(tile), int(k), int(k_max)),
                       {f"device {s}": r["spectrum"] for s, r in spectra.items()}, k=int(k)),
                key="spectrum_figure")
for col, (slot, r) in zip(st.columns(2), spectra.items()):
    col.metric(f"Device {slot}: variance captured by k = {int(k)}", f"{100 * r['captured']:.1f} %",
               help=f"n = {results[slot]['n']} cells; profile hash {hashes[slot][:12]}")

for col, slot in zip(st.columns(2), devices):
    both = captured_both(devices[slot], hashes[slot], int(tile), min(int(k), results[slot]["n"]))
    col.caption(f"Device {slot}, the tile as a classifier head (bit lines = outputs): captured variance / "
                "captured loss-relevant variance: plain top-k " + " / ".join(
                    f"{100 * both['plain'][x]:.1f} %" for x in ("captured_variance", "captured_relevant_variance"))
                + ", loss-relevant top-k " + " / ".join(
                    f"{100 * both['relevant'][x]:.1f} %" for x in ("captured_variance", "captured_relevant_variance")))

# -- saving ---------------------------------------------------------------------------------------
st.header("Noise against time since programming")
crossbars = {slot: d for slot, d in devices.items() if isinstance(d, CrossbarParams)}
if crossbars:
    st.plotly_chart(pf.noise_over_time_figure({f"device {s}": pf.noise_over_time(d) for s, d in crossbars.items()}),
                    key="time_figure")
    st.caption("Per-cell std of each noise component and in total; only the programming noise grows with "
               "time (Wan et al. 2022 fits at 1 s, 1 day and 2 days, held beyond). The marker is the "
               "device's chosen time.")
if len(crossbars) < len(devices):
    st.caption("A fitted or dense device was measured at one time: it has no time model.")

st.header("Save a device")
with st.form("save_profile"):
    slot = st.radio("Which device", list(devices), horizontal=True)
    name = st.text_input("Name (saved as profiles/NAME.npz)", value="")
    overwrite = st.checkbox("Overwrite an existing profile of that name")
    if st.form_submit_button("Save"):
        try:
            path = ws.save_profile(name, devices[slot], overwrite=overwrite)
        except (ValueError, TypeError, FileExistsError) as exc:
            st.error(f"Not saved: {exc}")
        else:
            st.session_state["saved_message"] = (f"Saved device {slot} as {path.name}; it is now a choice "
                                                 f"on every page.")
            st.rerun()  # list the devices again, so that this page's choices include it at once
