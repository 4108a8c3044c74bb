"""The DAT dashboard's entry point: the page menu (st.navigation) and the home page, which says
what the tool does, the workflow, and the workspace's state."""

import streamlit as st

from faces.dashboard import warmup
from faces.dashboard.widgets.landscape_jobs import running_jobs
from faces.dashboard.workspace import Workspace


PAGES = {  # file -> (menu title, URL path, link text on the home page)
    "pages/1_Device_profiles.py": ("Device profiles", "Device_profiles",
                                   "Device profiles: presets, parameters, measurements"),
    "pages/2_Train.py": ("Train", "Train", "Train: SGD and DAT, the trio, background jobs"),
    "pages/3_Models.py": ("Models", "Models", "Models: checkpoints, evaluation, Table I"),
    "pages/4_Noise_curves.py": ("Noise curves", "Noise_curves", "Noise curves: 1D loss along noise directions"),
    "pages/5_Loss_surfaces.py": ("Loss surfaces", "Loss_surfaces",
                                 "Loss surfaces: 2D plane through SGD, DAT-A, DAT-B"),
    "pages/6_Compare_devices.py": ("Compare devices", "Compare_devices",
                                   "Compare devices: A vs B and their difference"),
    "pages/7_Instruments.py": ("Instruments", "Instruments", "Instruments: twins, transfer, aging, sharpness"),
}


def home() -> None:
    st.set_page_config(page_title="DAT: device-aware training", layout="wide")

    st.title("Device-Aware Training for ReRAM crossbars")
    st.markdown(
        "Weights programmed onto ReRAM crossbars are perturbed by each device's own noise: "
        "programming noise, spatially correlated variation, shared word-line and bit-line terms. "
        "**Device-Aware Training (DAT)** trains a network whose loss stays low along the directions "
        "in which a given device's noise actually moves the weights. This dashboard builds device "
        "noise profiles, trains SGD and DAT models, evaluates them with and without noise, and shows "
        "*why* DAT helps through loss landscapes along each device's noise directions."
    )

    st.subheader("Workflow")
    st.markdown(
        "1. **Device profiles**: look at device A and device B, change their parameters, or fit a "
        "profile from your own programming measurements.\n"
        "2. **Train**: train SGD, DAT on device A and DAT on device B (\"the trio\") on one architecture; "
        "runs continue in the background.\n"
        "3. **Models**: inspect, upload, download and evaluate checkpoints; Table I of the paper.\n"
        "4. **Noise curves** and **Loss surfaces**: 1D curves along noise directions and the 2D "
        "surfaces through the three models (Fig. 2 and Fig. 1 of the paper).\n"
        "5. **Compare devices**: A and B on one colour scale, and their difference. Every figure "
        "downloads as PNG, SVG, PDF, data and a reproduction JSON."
    )

    ws = Workspace.default()
    summary = ws.summary()
    st.subheader("Workspace")
    c1, c2, c3 = st.columns(3)
    c1.metric("Saved profiles", summary["profiles"], help=str(ws.profiles_dir))
    c2.metric("Checkpoints", summary["checkpoints"], help=str(ws.checkpoints_dir))
    c3.metric("Jobs running or queued", summary["jobs_running"])
    st.caption(f"Workspace folder: `{summary['root']}`")
    if summary["job_labels"]:
        st.markdown("Running: " + ", ".join(f"`{label}`" for label in summary["job_labels"]))
    if summary["checkpoints"] == 0:
        st.info("No checkpoints yet. Make the small demo trio (SGD, DAT-A, DAT-B on digits: about 25 s on an "
                "idle 2-core machine, many minutes on a busy one) with `dat demo` in a terminal, or with the "
                "button below; the landscape pages use it at once.")
        if st.button("Make demo checkpoints", key="make_demo"):
            from faces.dashboard.helpers import submit_demo

            try:
                job = submit_demo(ws)
            except ValueError as exc:
                st.error(str(exc))
            else:
                st.info(f"Submitted {job.label} ({job.id}); follow it on the Train page.")

    st.subheader("Pages")
    for path, (_, _, text) in PAGES.items():
        st.page_link(path, label=text)

    if summary["jobs_error"]:
        st.error(summary["jobs_error"])
    if summary["jobs_interrupted"]:
        st.warning(f"{summary['jobs_interrupted']} job(s) were interrupted when the server stopped; resume "
                   "them on the Train page.")
    if summary["jobs_failed"]:
        st.warning(f"{summary['jobs_failed']} job(s) failed; see the Train page for their messages.")


page = st.navigation([st.Page(home, title="Home", default=True)]
                     + [st.Page(path, title=title, url_path=url) for path, (title, url, _) in PAGES.items()])
# Every page shows the workspace's running jobs (training and landscapes) in its sidebar.
running_jobs(Workspace.default())
try:
    page.run()
finally:  # also after st.stop() / st.rerun(), which leave page.run() by an exception
    warmup.start()  # torch and the landscape library load while the user reads the page
