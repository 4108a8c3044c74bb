"""Every dashboard page under Streamlit's AppTest: it renders, its main controls work on tiny settings,
and bad input shows an error on the page instead of an exception."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from faces.dashboard import jobs
from landscape.defaults import CURVE_DRAWS

TIMEOUT = 240
APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def workspace(demo_workspace, tmp_path, monkeypatch):
    """A private copy of the miniature demo workspace, so tests that write do not affect others."""
    root = tmp_path / "ws"
    shutil.copytree(demo_workspace, root)
    monkeypatch.setenv("DAT_WORKSPACE", str(root))
    return root


@pytest.fixture
def empty_workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("DAT_WORKSPACE", str(tmp_path))
    return tmp_path


def page(path: str) -> AppTest:
    """Start the app at home and switch to ``path`` (as a user clicking its link would)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    if path != "app.py":
        at.switch_page(path).run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return " | ".join(str(e.value) for e in elements)


def bars(elements) -> str:
    return " | ".join(e.text for e in elements)


def finished(at: AppTest) -> AppTest:
    """Wait for the landscape jobs the page submitted, then run the page again (as its progress
    fragment does once a job ends)."""
    for job in jobs.registry().active():
        if job.lane == jobs.LANDSCAPE_LANE:
            jobs.registry().wait(job.id, timeout=TIMEOUT)
    return at.run()


# -- home ---------------------------------------------------------------------------------------
def test_home_shows_the_workspace_and_links_every_page(workspace):
    at = page("app.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Saved profiles": "2", "Checkpoints": "3", "Jobs running or queued": "0"}
    assert len(at.get("page_link")) == 7
    assert not at.info  # checkpoints exist: no hint to make the demo


def test_home_on_an_empty_workspace_says_how_to_make_the_demo(empty_workspace):
    at = page("app.py")
    assert "dat demo" in texts(at.info)
    assert at.button(key="make_demo")


# -- device profiles ----------------------------------------------------------------------------
def test_profiles_page_shows_both_devices(workspace):
    at = page("pages/1_Device_profiles.py")
    charts = at.get("plotly_chart")
    assert len(charts) == 6  # maps, Sigma A, Sigma B, correlation, spectrum, noise against time
    assert [m.label for m in at.metric] == ["Device A: variance captured by k = 10",
                                            "Device B: variance captured by k = 10"]


def test_editing_parameters_changes_the_device_and_bad_values_show_an_error(workspace):
    at = page("pages/1_Device_profiles.py")
    at.number_input(key="A_device-A_sigma_spatial").set_value(0.0)
    at.button(key="FormSubmitter:params_A-Apply").click().run()
    assert not at.exception and not at.error
    assert "spatial 0.0000" in at.caption[0].value
    at.number_input(key="A_device-A_ell").set_value(0.0)  # a correlation length must be > 0
    at.button(key="FormSubmitter:params_A-Apply").click().run()
    assert not at.exception
    assert "ell" in texts(at.error)


def test_measurements_upload_fits_a_device_and_a_bad_file_shows_an_error(workspace):
    at = page("pages/1_Device_profiles.py")
    maps = np.random.default_rng(0).normal(scale=0.05, size=(40, 4, 4))
    buf = io.BytesIO()
    np.savez(buf, maps=maps)
    at.file_uploader(key="measurements").set_value(("tile.npz", buf.getvalue(), "application/octet-stream")).run()
    at.button(key="fit").click().run()
    assert not at.exception and not at.error
    assert "Fitted" in texts(at.success)
    assert "fitted from the upload (unsaved)" in at.selectbox(key="choice_A").options

    at.file_uploader(key="measurements").set_value(("junk.npz", b"not a zip archive", "application/octet-stream")).run()
    at.button(key="fit").click().run()
    assert not at.exception
    assert "junk.npz" in texts(at.error)


def test_saving_a_profile_writes_a_loadable_file_and_a_bad_name_is_refused(workspace):
    from dat.noise.crossbar import PRESETS
    from dat.noise.io import load_device

    at = page("pages/1_Device_profiles.py")
    at.text_input[-1].set_value("my-device")
    at.button(key="FormSubmitter:save_profile-Save").click().run()
    assert not at.exception and not at.error
    assert load_device(workspace / "profiles" / "my-device.npz") == PRESETS["device-A"]
    at.text_input[-1].set_value("../escape")
    at.button(key="FormSubmitter:save_profile-Save").click().run()
    assert "Not saved" in texts(at.error)
    assert not (workspace / "escape.npz").exists()


# -- train --------------------------------------------------------------------------------------
def tiny_form(at: AppTest, epochs: int = 1) -> None:
    for key, value in (("epochs", epochs), ("width", 4), ("hidden", 8), ("draws", 2)):
        at.number_input(key=f"digits_{key}").set_value(value)


def test_train_the_trio_writes_three_new_checkpoints_in_a_folder_of_their_own(workspace):
    before = {p for p in (workspace / "checkpoints").rglob("*.safetensors")}
    at = page("pages/2_Train.py")
    tiny_form(at)
    at.button(key="FormSubmitter:train_form-Train the trio (SGD, DAT-A, DAT-B)").click().run()
    assert not at.exception and not at.error
    job = jobs.registry().get(at.session_state["followed_job"])
    jobs.registry().wait(job.id, timeout=TIMEOUT)
    assert job.state == jobs.DONE, job.error
    new = {p for p in (workspace / "checkpoints").rglob("*.safetensors")} - before
    assert len(new) == 3 and len({p.parent for p in new}) == 1
    assert {p.stem for p in new} == {"sgd", "dat-a", "dat-b"}
    assert job.progress == 1.0 and any(h.get("run") == "dat-b" for h in job.history)
    at.run()
    assert not at.exception
    assert "Done" in texts(at.success)
    assert at.get("plotly_chart")  # the loss / accuracy curves


def test_a_failed_job_shows_its_message_and_the_page_keeps_working(workspace):
    at = page("pages/2_Train.py")
    tiny_form(at)
    # CIFAR-10 is not in the workspace and downloads are off: training must fail with a clear message.
    at.selectbox(key="digits_dataset").set_value("cifar10")
    at.button(key="FormSubmitter:train_form-Train this model").click().run()
    job = jobs.registry().get(at.session_state["followed_job"])
    jobs.registry().wait(job.id, timeout=TIMEOUT)
    assert job.state == jobs.FAILED
    at.run()
    assert not at.exception
    assert "The job failed" in texts(at.error) and "cifar" in texts(at.error).lower()


def test_an_invalid_form_is_refused_before_any_job_starts(workspace):
    at = page("pages/2_Train.py")
    before = len(jobs.registry().jobs())
    at.number_input(key="digits_lr").set_value(0.0)
    at.number_input(key="digits_wd").set_value(0.0)
    at.selectbox(key="digits_method").set_value("sgd")
    at.selectbox(key="digits_bn").set_value("yes")  # plain SGD is the no-BatchNorm row
    at.button(key="FormSubmitter:train_form-Train this model").click().run()
    assert not at.exception
    assert "Not started" in texts(at.error)
    assert len(jobs.registry().jobs()) == before


# -- models -------------------------------------------------------------------------------------
def test_models_page_lists_evaluates_and_builds_table_one(workspace):
    from dat.checkpoint import read_meta

    at = page("pages/3_Models.py")
    assert len(at.dataframe[0].value) == 3
    at.multiselect(key="eval_models").set_value(["sgd.safetensors"])
    at.number_input(key="eval_draws").set_value(2)
    at.button(key="FormSubmitter:evaluate_form-Evaluate").click().run()
    assert not at.exception and not at.error
    row = at.dataframe[1].value.iloc[0]
    # The clean test accuracy must equal the one the trainer measured when it saved the checkpoint.
    trained = read_meta(workspace / "checkpoints" / "sgd.safetensors")["metrics"]["test"]["clean"]["acc"]
    assert row["test acc clean (%)"] == pytest.approx(100 * trained, abs=0.01)
    assert "±" in row["test acc noisy (%)"]
    assert at.download_button(key="table_csv") and at.download_button(key="table_md")
    table = texts(at.markdown)
    # Table I rows for DAT on A and DAT on B, and DAT on A's paired difference to SGD-BN (both on device A).
    assert "| SGD-BN |" in table and table.count("| DAT-Fast |") == 3
    assert "over the n seeds" in table and "n (seeds)" in table and "± over" in at.dataframe[1].value.columns


def test_checkpoint_upload_stores_a_valid_file_and_refuses_a_bad_one(workspace):
    at = page("pages/3_Models.py")
    good = (workspace / "checkpoints" / "dat-a.safetensors").read_bytes()
    at.file_uploader(key="checkpoint_upload").set_value(("mine.safetensors", good, "application/octet-stream")).run()
    at.button(key="store_upload").click().run()
    assert not at.exception and not at.error
    assert len(list((workspace / "checkpoints").glob("mine-*.safetensors"))) == 1
    assert len(at.dataframe[0].value) == 4

    at.file_uploader(key="checkpoint_upload").set_value(("evil.safetensors", b"\x80\x04pickle", "application/octet-stream")).run()
    at.button(key="store_upload").click().run()
    assert not at.exception
    assert "Upload refused" in texts(at.error)
    assert not list((workspace / "checkpoints").glob("evil*"))
    assert not [p for p in (workspace / "checkpoints").iterdir() if p.name.startswith(".")]


# -- landscapes ---------------------------------------------------------------------------------
def test_noise_curves_page_computes_and_offers_the_numbers(workspace):
    at = page("pages/4_Noise_curves.py")
    at.slider(key="curve_points").set_value(5)
    at.number_input(key="curve_draws").set_value(2)
    at.button(key="FormSubmitter:curves_form-Compute curves").click().run()
    finished(at)
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 1
    summary = at.dataframe[0].value
    # The demo trio's models by their names (as trained: the readable defaults), not their files.
    assert set(summary["model"]) == {"SGD-BN digits CNN6, 1 epoch", "DAT-Fast (device-A) digits CNN6, 1 epoch",
                                     "DAT-Fast (device-B) digits CNN6, 1 epoch"}
    assert set(summary["device"]) == {"device-A", "device-B"}
    legend = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["legend"]["title"]["text"]
    assert legend.startswith("digits CNN6, 1 epoch · band")  # what all three names share, said once
    assert at.download_button(key="dl_numbers.csv") and at.download_button(key="dl_reproduce.json")


def test_loss_surface_page_marks_the_models_at_their_clean_loss(workspace):
    from dat.checkpoint import load_checkpoint
    from dat.data import load_dataset
    from dat.evaluate import evaluate

    at = page("pages/5_Loss_surfaces.py")
    at.slider(key="surface_points_alpha").set_value(3)
    at.slider(key="surface_points_beta").set_value(3)
    at.number_input[0].set_value(2)
    at.button(key="FormSubmitter:surface_form-Compute surface").click().run()
    finished(at)
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 1
    table = at.dataframe[0].value
    assert list(dict.fromkeys(table["panel"])) == ["none", "device-A", "device-B"]  # devices by their own names
    assert {"loss_se", "accuracy_se"} <= set(table.columns)
    noisy = table[table["panel"] != "none"]
    assert (noisy["loss_se"] > 0).all() and (table[table["panel"] == "none"]["loss_se"] == 0).all()
    markers = table.pivot(index="panel", columns="model", values="loss")
    # Reference: the SGD checkpoint's own loss on the same 512 training images, without noise.
    bundle = load_dataset("digits")
    x, y = bundle.train_eval.tensors
    model = load_checkpoint(workspace / "checkpoints" / "sgd.safetensors").model
    clean = evaluate(model, torch.utils.data.TensorDataset(x[:512], y[:512]))["clean"]["loss"]
    assert markers.loc["none", "SGD"] == pytest.approx(clean, rel=1e-4)
    at.radio[0].set_value("surface3d").run()
    assert not at.exception and len(at.get("plotly_chart")) == 3


def test_the_trio_roles_offer_only_compatible_checkpoints(workspace):
    from dat.checkpoint import read_meta, save_checkpoint
    from dat.models import build_model

    meta = read_meta(workspace / "checkpoints" / "dat-a.safetensors")
    meta.pop("model")
    save_checkpoint(workspace / "checkpoints" / "wide.safetensors",
                    build_model("cnn6", True, 1, 8, 10, width=6, hidden=8), meta)
    shutil.copy(workspace / "checkpoints" / "dat-b.safetensors", workspace / "checkpoints" / "dat-b-copy.safetensors")
    at = page("pages/5_Loss_surfaces.py")
    for role in ("sgd", "dat-a", "dat-b"):
        options = at.selectbox(key=f"_{role}").options
        assert not any("wide.safetensors" in o for o in options), options  # another architecture
        assert any("dat-b-copy.safetensors" in o for o in options)          # the same one: offered
        assert all(o.startswith(("SGD-BN digits", "DAT-Fast (device-")) for o in options)  # by name


def test_a_trio_with_one_file_twice_is_refused_before_computing(workspace):
    at = page("pages/5_Loss_surfaces.py")
    at.selectbox(key="_dat-a").set_value("sgd.safetensors")
    at.slider(key="surface_points_alpha").set_value(3)
    at.slider(key="surface_points_beta").set_value(3)
    at.button(key="FormSubmitter:surface_form-Compute surface").click().run()
    assert not at.exception and not at.get("plotly_chart")
    assert not [j for j in jobs.registry().active() if j.lane == jobs.LANDSCAPE_LANE]  # nothing was submitted
    assert "three different checkpoints" in texts(at.error) and "sgd.safetensors" in texts(at.error)


def test_compare_devices_page_shows_both_devices_and_the_numbers(workspace):
    at = page("pages/6_Compare_devices.py")
    at.slider(key="compare_points").set_value(3)
    at.slider(key="compare_points_beta").set_value(3)
    at.number_input(key="compare_draws").set_value(2)
    at.number_input(key="compare_curve_draws").set_value(2)
    at.button(key="FormSubmitter:compare_form-Compare").click().run()
    finished(at)
    assert not at.exception and not at.error
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    maps = [t for t in fig["data"] if t["type"] in ("contour", "heatmap")]
    assert len(maps) == 3  # A, B, and B - A
    assert (maps[0]["zmin"], maps[0]["zmax"]) == (maps[1]["zmin"], maps[1]["zmax"])  # one colour scale
    assert maps[2]["zmin"] == -maps[2]["zmax"]  # the difference is centred at zero
    assert len(at.metric) == 3 and len(at.dataframe[0].value) == 6


@pytest.mark.parametrize("path", ["pages/3_Models.py", "pages/4_Noise_curves.py", "pages/5_Loss_surfaces.py",
                                  "pages/6_Compare_devices.py"])
def test_pages_without_checkpoints_say_how_to_make_them(empty_workspace, path):
    at = page(path)
    assert "dat demo" in texts(at.info)
    assert not at.error


# -- messages agree with state ------------------------------------------------------------------
def test_train_page_with_a_failing_job_shows_no_success_message(workspace, monkeypatch):
    """The job fails before the page draws (submit waits for it): the page must not say "Started"
    in green above the red failure."""
    from faces.dashboard import helpers as ui_helpers

    real = ui_helpers.submit_training

    def submit_and_wait(ws, config):
        job = real(ws, config)
        jobs.registry().wait(job.id, timeout=TIMEOUT)
        return job

    monkeypatch.setattr(ui_helpers, "submit_training", submit_and_wait)
    at = page("pages/2_Train.py")
    tiny_form(at)
    at.selectbox(key="digits_dataset").set_value("cifar10")  # no CIFAR in the workspace: the job fails
    at.button(key="FormSubmitter:train_form-Train this model").click().run()
    assert not at.exception
    assert jobs.registry().get(at.session_state["followed_job"]).state == jobs.FAILED
    assert "The job failed" in texts(at.error)
    assert not at.success


def test_cifar_preset_without_data_warns_before_submission(workspace):
    at = page("pages/2_Train.py")
    assert not at.warning  # digits is embedded
    before = len(jobs.registry().jobs())
    at.selectbox[0].set_value("cifar10-cnn6").run()
    assert not at.exception
    warning = texts(at.warning)
    assert "cifar10" in warning and str(workspace / "data") in warning and "data_batch_1" in warning
    assert len(jobs.registry().jobs()) == before  # said before anything was submitted


def test_home_counts_running_jobs_of_the_workspace(workspace):
    import threading

    release = threading.Event()
    job = jobs.submit(lambda report, should_stop: release.wait(TIMEOUT) and {}, label="held open",
                      store=workspace / "jobs.json")
    try:
        at = page("app.py")
        assert {m.label: m.value for m in at.metric}["Jobs running or queued"] == "1"
        assert "held open" in texts(at.markdown)
    finally:
        release.set()
        jobs.registry().wait(job.id, timeout=TIMEOUT)
    at.run()
    assert {m.label: m.value for m in at.metric}["Jobs running or queued"] == "0"


# -- device profiles for humans -----------------------------------------------------------------
def test_a_time_preset_changes_the_profile_and_applying_confirms(workspace):
    from dat.noise.crossbar import PRESETS

    from faces.dashboard.helpers import time_choice

    at = page("pages/1_Device_profiles.py")
    own = PRESETS["device-A"].t_seconds
    assert at.selectbox(key="A_device-A_t_choice").value == time_choice(own)  # the preset's own time
    assert own > 1.0
    at.selectbox(key="A_device-A_t_choice").set_value("1 s")
    at.button(key="FormSubmitter:params_A-Apply").click().run()
    assert not at.exception and not at.error
    assert "Applied" in texts(at.success)
    second = PRESETS["device-A"].replace(t_seconds=1.0).stds()["prog"]
    assert f"{second:.4f}" != f"{PRESETS['device-A'].stds()['prog']:.4f}"
    assert f"prog {second:.4f}" in at.caption[0].value
    # a free value
    at.selectbox(key="A_device-A_t_choice").set_value("other (seconds, below)")
    at.number_input(key="A_device-A_t_other").set_value(10.0)
    at.button(key="FormSubmitter:params_A-Apply").click().run()
    ten = PRESETS["device-A"].replace(t_seconds=10.0).stds()["prog"]
    assert f"prog {ten:.4f}" in at.caption[0].value
    labels = [n.label for n in at.number_input]
    assert "spatial correlation length (cells)" in labels
    fig = json.loads(at.get("plotly_chart")[-1].proto.spec)  # noise against time, both devices
    assert fig["layout"]["xaxis"]["type"] == "log"


def test_a_saved_profile_is_a_choice_on_another_page_at_once_and_only_once(workspace):
    at = page("pages/1_Device_profiles.py")
    at.text_input[-1].set_value("lab-device")
    at.button(key="FormSubmitter:save_profile-Save").click().run()
    assert not at.exception and not at.error
    assert "lab-device" in texts(at.success)
    assert at.selectbox(key="choice_B").options.count("lab-device (saved)") == 1  # this page, re-listed
    at.switch_page("pages/2_Train.py").run()
    assert not at.exception
    options = at.selectbox(key="digits_device").options
    assert options.count("lab-device (saved)") == 1
    # The demo's saved device-A / device-B hold the presets: listed once, under the preset's name.
    assert [o for o in options if o.startswith("device-A")] == ["device-A"]


def test_fit_summary_is_a_readable_table_not_raw_json(workspace):
    at = page("pages/1_Device_profiles.py")
    maps = np.random.default_rng(0).normal(scale=0.05, size=(40, 4, 4))
    buf = io.BytesIO()
    np.savez(buf, maps=maps)
    at.file_uploader(key="measurements").set_value(("tile.npz", buf.getvalue(), "application/octet-stream")).run()
    at.button(key="fit").click().run()
    assert not at.exception and not at.error
    assert not at.json
    assert "FittedTile(" not in texts(at.success) and "{" not in texts(at.success)
    table = at.table[0].value
    values = dict(zip(table["quantity"], table["value"]))
    assert values["estimator"] == "Ledoit-Wolf shrinkage"
    assert values["samples"].startswith("40 repeated maps of a 4 x 4 tile")
    assert "condition number of Sigma" in values


# -- work that survives -------------------------------------------------------------------------
@pytest.fixture
def held(monkeypatch):
    """Landscape jobs wait at their start until the test releases them (so the test sees them run)."""
    import threading

    from faces.dashboard import helpers as ui_helpers

    gate = threading.Event()
    real = ui_helpers.compute_landscape

    def waiting(*args, **kwargs):
        assert gate.wait(TIMEOUT)
        return real(*args, **kwargs)

    monkeypatch.setattr(ui_helpers, "compute_landscape", waiting)
    yield gate
    gate.set()


def tiny_surface(at: AppTest) -> None:
    at.slider(key="surface_points_alpha").set_value(3)
    at.slider(key="surface_points_beta").set_value(3)
    at.number_input(key="surface_draws").set_value(1)
    at.number_input(key="surface_samples").set_value(128)


def test_a_landscape_job_survives_a_page_switch_and_its_result_is_shown_on_return(workspace, held):
    at = page("pages/5_Loss_surfaces.py")
    tiny_surface(at)
    at.selectbox(key="surface_dev_b").set_value("device-A")
    at.selectbox(key="surface_dev_a").set_value("device-B")  # a setting that differs from the default
    at.button(key="FormSubmitter:surface_form-Compute surface").click().run()
    assert not at.exception and not at.error
    assert "loss surface: 3 x 3 grid" in bars(at.get("progress"))  # the page follows its job
    assert not at.get("plotly_chart")

    at.switch_page("pages/4_Noise_curves.py").run()  # away, while the job waits
    assert not at.exception
    running = [j for j in jobs.registry().active() if j.lane == jobs.LANDSCAPE_LANE]
    assert len(running) == 1
    # app.py's frame lists it in the sidebar of every page (AppTest runs that frame for the home page).
    assert "loss surface: 3 x 3 grid" in bars(page("app.py").sidebar.get("progress"))

    held.set()
    jobs.registry().wait(running[0].id, timeout=TIMEOUT)
    at.switch_page("pages/5_Loss_surfaces.py").run()  # back: the result, and the form as it was
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 1
    assert at.slider(key="surface_points_alpha").value == 3 and at.number_input(key="surface_draws").value == 1
    assert at.selectbox(key="surface_dev_a").value == "device-B"
    assert list(dict.fromkeys(at.dataframe[0].value["panel"])) == ["none", "device-B", "device-A"]
    assert not page("app.py").sidebar.get("progress")  # nothing runs any more


def test_a_cancelled_landscape_job_says_so_and_resumes(workspace, held):
    at = page("pages/5_Loss_surfaces.py")
    tiny_surface(at)
    at.button(key="FormSubmitter:surface_form-Compute surface").click().run()
    job = next(j for j in jobs.registry().active() if j.lane == jobs.LANDSCAPE_LANE)
    at.button(key=f"cancel_{job.id}").click().run()
    held.set()
    finished(at)
    assert job.state == jobs.CANCELLED
    assert "was cancelled" in texts(at.warning) and not at.get("plotly_chart") and not at.success
    at.button(key=f"resume_{job.id}").click().run()
    finished(at)
    assert job.state == jobs.DONE and not at.exception and not at.warning
    assert len(at.get("plotly_chart")) == 1


def linked(params: dict, path: str = "pages/5_Loss_surfaces.py") -> AppTest:
    """A new session opening the app at ``path`` with the URL query ``params`` (a shared link)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(params)
    at.run()
    at.switch_page(path).run()
    assert not at.exception, at.exception
    return at


def test_a_link_restores_the_selection_and_shows_the_same_figure(workspace):
    at = page("pages/5_Loss_surfaces.py")
    tiny_surface(at)
    at.selectbox(key="surface_dev_a").set_value("device-B")
    at.selectbox(key="surface_dev_b").set_value("device-A")
    at.number_input(key="surface_seed").set_value(7)
    at.button(key="FormSubmitter:surface_form-Compute surface").click().run()
    finished(at)
    url = dict(at.query_params)
    assert url["points_alpha"] == "3" and url["points_beta"] == "3" and url["a"] == "device-B" and url["seed"] == "7" and url["sgd"] == "sgd.safetensors"
    first = json.loads(at.get("plotly_chart")[0].proto.spec)

    before = len(jobs.registry().jobs())
    other = linked(url)  # a new session: the same form ...
    assert other.slider(key="surface_points_alpha").value == 3 and other.number_input(key="surface_seed").value == 7
    assert other.selectbox(key="surface_dev_a").value == "device-B"
    assert other.slider(key="surface_alpha").value == (-0.5, 1.5)
    assert not other.warning
    finished(other)  # ... and the same figure, from the job the first session ran
    assert len(jobs.registry().jobs()) == before
    assert json.loads(other.get("plotly_chart")[0].proto.spec) == first

    curves = linked({"models": "sgd.safetensors,dat-a.safetensors", "devices": "device-B", "points": "5",
                     "draws": "2", "samples": "64"}, "pages/4_Noise_curves.py")
    assert curves.multiselect(key="curve_models").value == ["sgd.safetensors", "dat-a.safetensors"]
    assert curves.multiselect(key="curve_devices").value == ["device-B"]
    finished(curves)
    assert not curves.exception and len(curves.get("plotly_chart")) == 1
    assert set(curves.dataframe[0].value["device"]) == {"device-B"}


@pytest.mark.parametrize("path, params, named", [
    ("pages/5_Loss_surfaces.py", {"points_alpha": "999", "a": "no-such-device", "alpha": "2,1", "bogus": "1"},
     ["points_alpha", "no-such-device", "alpha", "bogus"]),
    ("pages/4_Noise_curves.py", {"models": "../../etc/passwd", "draws": "many", "quantity": "joy"},
     ["models", "draws", "quantity"]),
    ("pages/6_Compare_devices.py", {"trio": "nowhere", "threshold": "-1", "view": ""}, ["trio", "threshold", "view"]),
])
def test_bad_link_values_warn_and_fall_back_to_the_defaults(workspace, path, params, named):
    before = len(jobs.registry().jobs())
    at = linked(params, path)
    assert not at.exception and not at.error
    warning = texts(at.warning)
    assert "could not all be used" in warning and all(n in warning for n in named), warning
    assert len(jobs.registry().jobs()) == before  # a link with refused values computes nothing
    if path.startswith("pages/5"):
        assert at.slider(key="surface_points_alpha").value == 21 and at.selectbox(key="surface_dev_a").value == "device-A"
        assert at.slider(key="surface_alpha").value == (-0.5, 1.5)
    if path.startswith("pages/4"):
        assert at.number_input(key="curve_draws").value == CURVE_DRAWS and at.radio(key="curve_metric").value == "loss"


def test_a_new_threshold_on_the_same_comparison_reuses_the_job_and_refreshes_the_exported_summary(workspace):
    at = page("pages/6_Compare_devices.py")
    at.slider(key="compare_points").set_value(3)
    at.number_input(key="compare_draws").set_value(2)
    at.number_input(key="compare_samples").set_value(128)
    at.button(key="FormSubmitter:compare_form-Compare").click().run()
    finished(at)
    first = at.session_state["compare_numbers"][1]["summary.csv"]
    count = len(jobs.registry().jobs())
    at.number_input(key="compare_threshold").set_value(5.0)
    at.button(key="FormSubmitter:compare_form-Compare").click().run()
    finished(at)
    assert not at.exception and not at.error
    assert len(jobs.registry().jobs()) == count  # the same surface and curves: the finished job is followed
    assert at.session_state["compare_numbers"][1]["summary.csv"] != first  # the summary of the new threshold


def test_a_rerun_carrying_an_older_query_string_keeps_the_form(workspace):
    """The query string a browser sends with a rerun can lag behind the one the last run wrote: only
    a session's first run reads the URL, later ones keep what the user set."""
    at = page("pages/5_Loss_surfaces.py")
    stale = dict(at.query_params)
    assert stale["points_alpha"] == "21"
    tiny_surface(at)
    at.button(key="FormSubmitter:surface_form-Compute surface").click().run()
    assert at.query_params["points_alpha"] == "3"
    at.query_params.clear()
    at.query_params.update(stale)  # the rerun arrives with the query string of before the submit
    at.run()
    assert not at.exception and not at.warning
    assert at.slider(key="surface_points_alpha").value == 3 and at.query_params["points_alpha"] == "3"
    finished(at)


def test_the_train_page_lists_training_jobs_only(workspace):
    """A finished landscape job is followed on its own page and in the sidebar; the Train page's job
    panel (which offers checkpoints and Resume of training) does not list it."""
    at = page("pages/5_Loss_surfaces.py")
    tiny_surface(at)
    at.button(key="FormSubmitter:surface_form-Compute surface").click().run()
    finished(at)
    assert any(j.lane == jobs.LANDSCAPE_LANE for j in jobs.registry().jobs())
    at.switch_page("pages/2_Train.py").run()
    assert not at.exception
    assert "No jobs yet" in texts(at.info)
