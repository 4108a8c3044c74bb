"""Research instruments: does correlation matter (twins), does robustness transfer (train on X, test
on Y), how accuracy ages after programming, and a curvature that predicts the loss increase."""

import streamlit as st

from dat.errors import UserError
from faces.dashboard.helpers import device_choices, model_labels
from faces.dashboard.workspace import Workspace

st.set_page_config(page_title="Instruments", layout="wide")
st.title("Research instruments")
st.markdown(
    "Four questions no other tool answers. **Twins**: a device's diagonal twin keeps every cell's "
    "variance and drops all correlation; its isotropic twin keeps the total variance, spread evenly. "
    "**Transfer**: train on device X, test on device Y. **Aging**: accuracy from 1 s to 1 year after "
    "programming. **Sharpness**: ½ tr(H Σ_w), the curvature along the device's own noise, against the "
    "measured loss increase. Accuracies under noise show the mean and the worst chips (1st and 5th "
    "percentile over draws; each draw is one programmed chip).")

ws = Workspace.default()
choices = device_choices(ws)
rows = ws.list_checkpoints()
labels = model_labels(rows) if rows else {}
paths = {row["name"]: row["path"] for row in rows}


def export_section(prefix: str, result, figures: dict, command: str, extra=None) -> None:
    """The numbers (CSV, NPZ, reproduce.json) as a zip at once; the figures on request."""
    from landscape.export import BrowserNotFoundError, zip_bytes
    from landscape.instruments import bundle_files

    numbers = bundle_files(result, command=command, figures={}, formats=("csv", "npz"), extra=extra)
    c1, c2 = st.columns(2)
    c1.download_button("Numbers + reproduce.json (zip)", zip_bytes(numbers), file_name=f"{prefix}_numbers.zip",
                       mime="application/zip", key=f"{prefix}_dl_numbers")
    if c2.button("Prepare the bundle with PNG figures", key=f"{prefix}_png"):
        try:
            with st.spinner("Rendering figures with Plotly's static export..."):
                st.session_state[f"{prefix}_bundle"] = zip_bytes(bundle_files(
                    result, command=command, figures=figures, formats=("png", "csv", "npz"), widths=("double",),
                    extra=extra))
        except (BrowserNotFoundError, RuntimeError, ValueError) as exc:
            st.error(f"Figure export failed: {exc}")
    if st.session_state.get(f"{prefix}_bundle"):
        c2.download_button("Download the bundle (zip)", st.session_state[f"{prefix}_bundle"],
                           file_name=f"{prefix}_bundle.zip", mime="application/zip", key=f"{prefix}_dl_bundle")


def progress_bar(text: str):
    bar = st.progress(0.0, text=text)
    return bar, (lambda done, total: bar.progress(min(done / max(total, 1), 1.0), text=f"{text} {done}/{total}"))


twins_tab, transfer_tab, aging_tab, sharp_tab = st.tabs(["Twins", "Transfer matrix", "Aging", "Sharpness"])

# -- twins -------------------------------------------------------------------------------------------
with twins_tab:
    st.markdown("A twin is bound to a training run's noise targets: pick the device and the run's preset; "
                "save it to use it on the Train page or in the transfer matrix.")
    with st.form("twin_form"):
        c1, c2, c3 = st.columns(3)
        source = c1.selectbox("Device", list(choices), key="twin_device")
        kind = c2.radio("Twin", ["diagonal", "isotropic"], horizontal=True, key="twin_kind")
        from dat.config import PRESETS as TRAIN_PRESETS
        preset = c3.selectbox("Training preset (targets)", list(TRAIN_PRESETS), key="twin_preset")
        name = c1.text_input("Save as (profile name)", value="", key="twin_name")
        make = st.form_submit_button("Make twin", type="primary")
    if make:
        try:
            from dat.transfer import preset_profile
            from dat.noise.twins import twin
            from faces.dashboard.helpers import workspace_data_root

            full, targets = preset_profile(choices[source], preset, name=source, data_root=workspace_data_root(ws))
            t = twin(full, kind)
            k = min(10, full.n)
            st.session_state["twin_view"] = [
                {"profile": label, "n": p.n, "trace": p.trace(), "mean cell variance": p.trace() / p.n,
                 "min cell variance": float(p.variance().min()), "max cell variance": float(p.variance().max()),
                 f"captured variance (k = {k})": p.captured_variance(k)} for label, p in ((source, full), (t.name, t))]
            if name:
                path = ws.save_profile(name, t.device, targets=targets)
                st.success(f"Saved {name} to {path}")
        except (UserError, ValueError, FileExistsError, FileNotFoundError) as exc:
            st.error(f"Could not make the twin: {exc}")
    if st.session_state.get("twin_view"):
        st.dataframe(st.session_state["twin_view"], hide_index=True)

# -- transfer ----------------------------------------------------------------------------------------
with transfer_tab:
    from dat.transfer import correlation_ablation

    st.markdown("Trains SGD, SGD-BN and one DAT model per training device and seed on digits, then tests "
                "each under every device. A device is a preset, a saved profile, `iid-wan2022`, or any of "
                "them followed by `:diagonal` / `:isotropic` for its twin.")
    with st.form("transfer_form"):
        options = list(choices.values()) + ["iid-wan2022"]
        options += [f"{o}:{k}" for o in list(options) for k in ("diagonal", "isotropic")]
        devices = st.multiselect("Training and test devices", options,
                                 default=["device-A", "device-A:diagonal", "iid-wan2022"], key="transfer_devices")
        c1, c2, c3 = st.columns(3)
        epochs = c1.number_input("Epochs per model", 1, 50, 2, key="transfer_epochs")
        seeds = c2.text_input("Seeds (comma-separated)", "0,1", key="transfer_seeds")
        draws = c3.number_input("Draws (chips) per evaluation", 2, 500, 20, key="transfer_draws")
        method = c1.selectbox("DAT method", ["dat-full", "dat-fast"], key="transfer_method")
        run = st.form_submit_button("Run transfer matrix", type="primary")
    if run:
        try:
            from dat.config import resolve
            from dat.transfer import run_transfer

            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
            bar, cb = progress_bar("Training and testing models...")
            result = run_transfer(resolve("digits", epochs=int(epochs), method=method), devices, seeds=seed_list,
                                  draws=int(draws), folder=str(ws.root / "runs" / "transfer"), progress=cb)
            bar.empty()
            st.session_state["transfer"] = (result, f"dat transfer --devices {' '.join(devices)} --epochs {epochs} "
                                                    f"--seeds {seeds} --draws {draws} --method {method}")
        except (UserError, ValueError) as exc:
            st.error(f"Could not run the transfer matrix: {exc}")
    if "transfer" in st.session_state:
        from dat.transfer import rows_csv
        from landscape.instruments import ablation_figure, transfer_figure

        result, command = st.session_state["transfer"]
        figures = {"transfer_matrix": transfer_figure(result)}
        ablation = correlation_ablation(result)
        if ablation:
            figures["correlation_ablation"] = ablation_figure(ablation)
        for key, fig in figures.items():
            st.plotly_chart(fig, key=f"transfer_{key}")
        st.dataframe(result.summary(), hide_index=True)
        export_section("transfer", result, figures, command, {"ablation.csv": rows_csv(ablation)} if ablation else None)

# -- aging -------------------------------------------------------------------------------------------
with aging_tab:
    if not rows:
        st.info("No checkpoints yet: make the demo trio with `dat demo` (or the home page's button).")
    else:
        with st.form("aging_form"):
            picked = st.multiselect("Models", list(labels), default=list(labels)[:3],
                                    format_func=lambda n: f"{labels[n]}  ·  {n}", key="aging_models")
            devices = st.multiselect("Devices (crossbar)", list(choices), default=["device-A", "device-B"],
                                     key="aging_devices")
            draws = st.number_input("Draws (chips) per time point", 2, 500, 20, key="aging_draws")
            run = st.form_submit_button("Evaluate from 1 s to 1 year", type="primary")
        if run:
            try:
                from dat.aging import accuracy_vs_time

                bar, cb = progress_bar("Evaluating...")
                result = accuracy_vs_time({f"{labels[n]} · {n}": [paths[n]] for n in picked},
                                          {d: choices[d] for d in devices}, draws=int(draws), progress=cb)
                bar.empty()
                st.session_state["aging"] = (result, "dat aging " + " ".join(
                    f"--model '{labels[n]}={paths[n]}'" for n in picked) + " --devices " + " ".join(
                    choices[d] for d in devices) + f" --draws {int(draws)}")
            except (UserError, ValueError) as exc:
                st.error(f"Could not evaluate against time: {exc}")
        if "aging" in st.session_state:
            from landscape.instruments import aging_figure

            result, command = st.session_state["aging"]
            figures = {"accuracy_vs_time": aging_figure(result, "acc"), "loss_vs_time": aging_figure(result, "loss")}
            for key, fig in figures.items():
                st.plotly_chart(fig, key=f"aging_{key}")
            st.dataframe(result.summary(), hide_index=True)
            export_section("aging", result, figures, command)

# -- sharpness ---------------------------------------------------------------------------------------
with sharp_tab:
    if not rows:
        st.info("No checkpoints yet: make the demo trio with `dat demo` (or the home page's button).")
    else:
        with st.form("sharp_form"):
            picked = st.multiselect("Models", list(labels), default=list(labels)[:3],
                                    format_func=lambda n: f"{labels[n]}  ·  {n}", key="sharp_models")
            devices = st.multiselect("Devices", list(choices), default=["device-A", "device-B"], key="sharp_devices")
            c1, c2, c3 = st.columns(3)
            probes = c1.number_input("Hutchinson probes per device", 2, 1000, 32, key="sharp_probes")
            draws = c2.number_input("Noise directions for the measured increase", 2, 500, 20, key="sharp_draws")
            samples = c3.number_input("Training images used (0: all)", 0, 100_000, 512, step=128, key="sharp_samples")
            eigen = c1.number_input("Top Hessian eigenvalues (Lanczos; 0: none)", 0, 20, 3, key="sharp_eigen")
            run = st.form_submit_button("Compute sharpness", type="primary")
        if run:
            try:
                from faces.dashboard.helpers import workspace_data_root
                from landscape.sharpness import sharpness_study, study_inputs

                models, X, Y = study_inputs({f"{labels[n]} · {n}": paths[n] for n in picked}, samples=int(samples),
                                            data_root=workspace_data_root(ws))
                bar, cb = progress_bar("Model-device pairs...")
                result = sharpness_study(models, {d: choices[d] for d in devices}, X, Y, probes=int(probes),
                                         draws=int(draws), eigenvalues=int(eigen), progress=cb)
                bar.empty()
                st.session_state["sharpness"] = (result, "dat sharpness " + " ".join(
                    f"--model '{labels[n]}={paths[n]}'" for n in picked) + " --devices " + " ".join(
                    choices[d] for d in devices) + f" --probes {int(probes)} --draws {int(draws)} "
                    f"--samples {int(samples)} --eigenvalues {int(eigen)}")
            except (UserError, ValueError) as exc:
                st.error(f"Could not compute the sharpness: {exc}")
        if "sharpness" in st.session_state:
            from landscape.instruments import sharpness_figure

            result, command = st.session_state["sharpness"]
            figures = {"device_sharpness": sharpness_figure(result)}
            st.plotly_chart(figures["device_sharpness"], key="sharp_figure")
            c = result.correlation["sharpness"]
            st.metric("Spearman ρ (sharpness vs measured increase)", f"{c['spearman']:.2f}",
                      help=f"p = {c['p_value']:.2g} over {c['pairs']} model-device pairs (scipy.stats.spearmanr)")
            st.dataframe(list(result.rows), hide_index=True)
            st.caption("Per layer (expectations sum to the total):")
            st.dataframe(list(result.layer_rows), hide_index=True)
            if result.eigenvalues:
                st.caption("Top Hessian eigenvalues on the noise targets (Lanczos on Hessian-vector products):")
                st.dataframe([{"model": m, **{f"λ{i + 1}": v for i, v in enumerate(vals)}}
                              for m, vals in result.eigenvalues.items()], hide_index=True)
            export_section("sharpness", result, figures, command)
