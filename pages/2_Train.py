"""Train: one model or the trio (SGD, DAT on A, DAT on B) as background jobs with live curves."""

import streamlit as st

from faces.dashboard import jobs
from dat.config import DATASETS, METHODS, PRESETS, TARGET_CHOICES, help_of, resolve
from dat.errors import UserError
from faces.dashboard.helpers import (device_choices, missing_data_message, submit_training, submit_trio,
                            training_figure, workspace_data_root)
from faces.dashboard.workspace import Workspace
from faces.dashboard.widgets.workspace import resume_button

st.set_page_config(page_title="Train", layout="wide")
st.title("Train")
st.markdown(
    "Choose a preset (it fills the form), adjust, then train one model or **the trio**: SGD, DAT on "
    "device A and DAT on device B on one architecture, so that the three span the landscape plane. "
    "Training runs in the background: leave the page, close the tab, the checkpoints are still "
    "written to `checkpoints/`. The job list is kept in the workspace: a job that the server's "
    "restart interrupted can be resumed from its last completed epoch.")

ws = Workspace.default()
choices = device_choices(ws)
labels = list(choices)

preset = st.selectbox("Preset", list(PRESETS), help="digits: seconds on a laptop; cifar*: the paper's settings.")
base = resolve(preset)
p = f"{preset}_"  # widget keys per preset, so that picking a preset refills the form
data_root = workspace_data_root(ws)
missing = missing_data_message(base.dataset, data_root)
if missing:  # said before anything is submitted: the job would fail on it
    st.warning(missing)

with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
    with c1:
        st.markdown("**Data and model**")
        dataset = st.selectbox("Dataset", DATASETS, index=DATASETS.index(base.dataset), key=p + "dataset",
                               help=help_of("dataset"))
        arch = st.selectbox("Architecture", ["cnn6", "resnet18"], index=["cnn6", "resnet18"].index(base.arch),
                            key=p + "arch", help=help_of("arch"))
        width = st.number_input("Width (channels of the first stage)", 1, 512, base.width or 64, key=p + "width",
                                help=help_of("width"))
        hidden = st.number_input("Hidden linear width (CNN6)", 1, 4096, base.hidden or 256, key=p + "hidden",
                                 help=help_of("hidden"))
        batchnorm = st.selectbox("BatchNorm", ["follow the method", "yes", "no"], key=p + "bn",
                                 help="By default SGD has none and every other method has it; the trio "
                                      "uses one architecture for all three.")
    with c2:
        st.markdown("**Method and device**")
        method = st.selectbox("Method (single model)", METHODS, index=METHODS.index(base.method), key=p + "method",
                              help=help_of("method"))
        device = st.selectbox("Device profile", labels, index=labels.index("device-A"), key=p + "device",
                              help=help_of("device"))
        targets = st.selectbox("Noise targets", TARGET_CHOICES, key=p + "targets", help=help_of("targets"))
        alpha = st.number_input("alpha (DAT strength)", 0.0, 1e5, float(base.alpha), key=p + "alpha",
                                help=help_of("alpha"))
        k = st.number_input("k (rank of A_k)", 1, 1000, base.k, key=p + "k", help=help_of("k"))
        dat_trio = st.selectbox("DAT method of the trio", ["dat-fast", "dat-full"], key=p + "trio_method")
        device_a = st.selectbox("Trio: device A", labels, index=labels.index("device-A"), key=p + "dev_a")
        device_b = st.selectbox("Trio: device B", labels, index=labels.index("device-B"), key=p + "dev_b")
    with c3:
        st.markdown("**Optimisation**")
        epochs = st.number_input("Epochs", 1, 1000, base.epochs, key=p + "epochs", help=help_of("epochs"))
        batch_size = st.number_input("Batch size", 1, 4096, base.batch_size, key=p + "batch",
                                     help=help_of("batch_size"))
        lr = st.number_input("Learning rate", 0.0, 10.0, float(base.lr), format="%.4f", key=p + "lr",
                             help=help_of("lr"))
        weight_decay = st.number_input("Weight decay", 0.0, 1.0, float(base.weight_decay), format="%.5f",
                                       key=p + "wd", help=help_of("weight_decay"))
        seed = st.number_input("Seed", 0, 1_000_000, base.seed, key=p + "seed", help=help_of("seed"))
        eval_draws = st.number_input("Noise draws for evaluation", 1, 1000, base.eval_draws, key=p + "draws",
                                     help=help_of("eval_draws"))
    run_name = st.text_input(
        "Name (optional)", key=p + "name", max_chars=80,
        placeholder="e.g. SGD-BN digits CNN6, 20 epochs / digits CNN6 trio, 20 epochs",
        help="Shown in legends, tables and export file names: the model's name, or the trio's when you "
             "train the trio. Empty: a readable name made from the settings.")
    b1, b2 = st.columns(2)
    one = b1.form_submit_button("Train this model")
    trio = b2.form_submit_button("Train the trio (SGD, DAT-A, DAT-B)", type="primary")

if one or trio:
    overrides = dict(dataset=dataset, arch=arch, width=int(width), hidden=int(hidden) if arch == "cnn6" else None,
                     targets=targets, alpha=float(alpha), k=int(k), epochs=int(epochs), batch_size=int(batch_size),
                     lr=float(lr), weight_decay=float(weight_decay), seed=int(seed), eval_draws=int(eval_draws),
                     data_root=str(data_root), name=run_name or None)
    if batchnorm != "follow the method":
        overrides["batchnorm"] = batchnorm == "yes"
    elif trio:
        overrides["batchnorm"] = True  # the trio's default: the SGD-BN architecture for all three
    try:
        if trio:
            config = resolve(preset, **overrides, method=dat_trio, device=choices[device_a])
            job = submit_trio(ws, config, choices[device_a], choices[device_b])
        else:
            job = submit_training(ws, resolve(preset, **overrides, method=method, device=choices[device]))
    except (ValueError, TypeError) as exc:
        st.error(f"Not started: {exc}")
    else:
        st.session_state["followed_job"] = job.id
        st.session_state["job_select"] = job.id  # show the new job in the panel below
        # No message here: the job panel below says what the job is doing now (a "started" line
        # here would stay on screen above a "failed" one).


@st.fragment(run_every=2)
def job_panel():
    """The jobs of this workspace, refreshed every 2 s without rerunning the form above."""
    registry = jobs.registry()
    st.header("Jobs")
    try:
        all_jobs = ws.list_jobs()
    except UserError as exc:  # a damaged jobs.json: say so, show this server's jobs
        st.error(str(exc))
        all_jobs = registry.jobs(ws.jobs_file)
    # Training jobs only: landscape jobs are followed on their own pages and in every page's sidebar.
    all_jobs = [j for j in all_jobs if j.lane == jobs.TRAIN_LANE]
    if not all_jobs:
        st.info("No jobs yet: start one with the form above.")
        return
    ids = [j.id for j in all_jobs]
    followed = st.session_state.get("followed_job")
    shown = st.selectbox("Follow job", ids, index=ids.index(followed) if followed in ids else 0,
                         format_func=lambda i: f"{i}: {registry.get(i).label}",
                         key="job_select")
    job = registry.get(shown)
    st.progress(job.progress, text=f"{job.state} · {job.stage or job.label} · {job.elapsed():.0f} s")
    if job.active and st.button("Cancel this job", key=f"cancel_{job.id}"):
        job.cancel()
        st.warning("Cancel requested: the job stops after its current step.")
    if job.active:
        st.info(f"{job.label} ({job.id}) is {job.state}: it runs in the background; this panel follows it.")
    elif job.state == jobs.FAILED:
        st.error(f"The job failed: {job.error}")
    elif job.state == jobs.DONE:
        written = (job.result or {}).get("checkpoints", [])
        st.success("Done. Checkpoints: " + ", ".join(f"`{p}`" for p in written))
    elif job.state == jobs.CANCELLED:
        st.warning("Cancelled; no checkpoint was written for the unfinished model. Resume continues it "
                   "from its last completed epoch (from the start if none was completed).")
    elif job.state == jobs.INTERRUPTED:
        st.warning("Interrupted: the server stopped while this job was queued or running. Resume continues "
                   "each unfinished model from its last completed epoch; finished models are kept.")
    if resume_button(ws, job):
        st.info(f"Resumed {job.label} ({job.id}).")
    if job.history:
        st.plotly_chart(training_figure(job), key=f"curves_{job.id}")
    st.dataframe(jobs.describe_jobs(all_jobs), hide_index=True)
    if any(not j.active for j in all_jobs) and st.button("Clear finished jobs from this list", key="forget"):
        registry.forget_finished(ws.jobs_file)
        st.rerun()


job_panel()
