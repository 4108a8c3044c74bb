"""The dashboard's workspace and glue: names, uploads, listings, trios, measurement fits."""

import io
import os

import numpy as np
import pytest
import torch

from faces.dashboard import helpers as ui_helpers
from dat.checkpoint import read_meta, save_checkpoint
from dat.models import build_model
from dat.fileio import check_name
from faces.dashboard.workspace import Workspace


def tiny_checkpoint(path, width=4):
    torch.manual_seed(0)
    model = build_model("cnn6", True, 1, 8, 10, width=width, hidden=8)
    save_checkpoint(path, model, {"method": "sgd-bn", "dataset": {"dataset": "digits"}})
    return path


@pytest.mark.parametrize("name", ["device-A", "my_profile.v2", "a"])
def test_plain_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "a..b", "x" * 65, "naïve", "a b"])
def test_names_that_could_leave_the_folder_or_hide_are_refused(name):
    with pytest.raises(ValueError, match="1-64 characters"):
        check_name(name)


def test_an_uploaded_checkpoint_is_validated_and_stored_under_a_fresh_name(tmp_path):
    ws = Workspace(tmp_path)
    data = tiny_checkpoint(tmp_path / "source.safetensors").read_bytes()
    first = ws.store_checkpoint_upload("model.safetensors", data)
    second = ws.store_checkpoint_upload("model.safetensors", data)
    assert first != second and first.parent == second.parent == ws.checkpoints_dir
    assert first.read_bytes() == data and read_meta(first)["method"] == "sgd-bn"
    assert not [p for p in ws.checkpoints_dir.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("filename,data,message", [
    ("m.safetensors", b"", "empty"),
    ("m.pt", b"12345678", "expected a .safetensors"),
    ("m.safetensors", b"\x80\x04\x95 a pickle, not a checkpoint", "not a valid checkpoint"),
])
def test_bad_uploads_are_refused_and_leave_nothing_behind(tmp_path, filename, data, message):
    ws = Workspace(tmp_path)
    with pytest.raises(ValueError, match=message):
        ws.store_checkpoint_upload(filename, data)
    assert not ws.checkpoints_dir.exists() or not list(ws.checkpoints_dir.iterdir())


def test_an_oversized_upload_is_refused_before_it_is_written(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(ValueError, match="limit"):
        ws.store_checkpoint_upload("m.safetensors", b"x" * 101, max_bytes=100)
    assert not ws.checkpoints_dir.exists()


def test_listing_covers_trio_folders_and_finds_complete_trios(tmp_path):
    ws = Workspace(tmp_path)
    for role in ("sgd", "dat-a", "dat-b"):
        tiny_checkpoint(ws.checkpoints_dir / f"{role}.safetensors")
        tiny_checkpoint(ws.checkpoints_dir / "trio-x" / f"{role}.safetensors")
    tiny_checkpoint(ws.checkpoints_dir / "half" / "sgd.safetensors")
    (ws.checkpoints_dir / "notes.safetensors").write_bytes(b"not a checkpoint")
    names = {row["name"] for row in ws.list_checkpoints()}
    assert names == {"sgd.safetensors", "dat-a.safetensors", "dat-b.safetensors", "trio-x/sgd.safetensors",
                     "trio-x/dat-a.safetensors", "trio-x/dat-b.safetensors", "half/sgd.safetensors"}
    assert set(ws.trios()) == {"", "trio-x"}
    assert ws.checkpoint_path("trio-x/sgd.safetensors").is_file()
    for bad in ("../sgd.safetensors", "a/b/c.safetensors"):
        with pytest.raises(ValueError):
            ws.checkpoint_path(bad)
    # Checkpoints without a stored name are named by their settings; names shared by several are
    # told apart by their files.
    labels = ui_helpers.model_labels(ws.list_checkpoints())
    assert labels["sgd.safetensors"] == "SGD-BN digits CNN6 · sgd.safetensors"
    assert labels["trio-x/dat-b.safetensors"] == "SGD-BN digits CNN6 · trio-x/dat-b.safetensors"
    assert len(set(labels.values())) == len(labels)


def test_default_workspace_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DAT_WORKSPACE", str(tmp_path))
    assert Workspace.default().root == tmp_path.resolve()
    monkeypatch.delenv("DAT_WORKSPACE")
    assert (Workspace.default().root / "app.py").is_file()


def test_saved_profiles_are_device_choices(tmp_path):
    from dat.noise.crossbar import PRESETS

    ws = Workspace(tmp_path)
    ws.save_profile("lab-tile", PRESETS["device-B"])
    with pytest.raises(FileExistsError, match="already exists"):
        ws.save_profile("lab-tile", PRESETS["device-A"])
    choices = ui_helpers.device_choices(ws)
    assert choices["lab-tile (saved)"] == os.path.join(tmp_path, "profiles", "lab-tile.npz")
    assert ui_helpers.load_device(choices["lab-tile (saved)"]) == PRESETS["device-B"]


def test_fitting_uploaded_measurements_recovers_the_sample_covariance():
    rng = np.random.default_rng(1)
    maps = rng.normal(scale=0.05, size=(400, 3, 3)) + 0.01
    buf = io.BytesIO()
    np.savez(buf, maps=maps)
    fitted = ui_helpers.fit_measurements("tile.npz", buf.getvalue(), k=2)
    flat = maps.reshape(400, -1)
    np.testing.assert_allclose(fitted.mu_, flat.mean(0), atol=1e-12)
    # Shrinkage moves Sigma towards a scaled identity, so compare with the sample covariance loosely.
    assert np.abs(fitted.sigma_ - np.cov(flat.T, bias=True)).max() < 0.2 * 0.05**2
    csv = "\n".join(",".join(repr(float(v)) for v in row) for row in flat).encode()
    from_csv = ui_helpers.fit_measurements("tile.csv", csv, k=2)
    np.testing.assert_allclose(from_csv.sigma_, fitted.sigma_, rtol=1e-12)


@pytest.mark.parametrize("filename,data,message", [
    ("tile.txt", b"1,2", "must be a .npz or .csv"),
    ("tile.npz", b"", "empty"),
    ("tile.npz", b"PK\x03\x04 broken", "tile.npz"),
])
def test_bad_measurement_files_say_what_was_expected(filename, data, message):
    with pytest.raises(ValueError, match=message):
        ui_helpers.fit_measurements(filename, data)


def test_trio_progress_runs_from_zero_to_one_over_the_three_models():
    seen = []
    cb = ui_helpers._trio_reporter(lambda event, payload: seen.append(payload["progress"]))
    for run in ("sgd", "dat-a", "dat-b"):
        for step in (1, 2):
            cb("step", {"run": run, "step": step, "total_steps": 2})
    assert seen == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])


def test_listing_the_workspace_removes_temporary_files_of_dead_writers_only(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ws = Workspace(tmp_path)
    trio = ws.checkpoints_dir / "trio-x"
    trio.mkdir(parents=True)
    stale = [trio / f".sgd.safetensors.{dead.pid}.abcd_123.tmp", ws.checkpoints_dir / f".upload.{dead.pid}.zz99yy88.tmp"]
    live = ws.checkpoints_dir / f".dat-a.safetensors.{os.getpid()}.abcdefgh.tmp"  # a write in progress here
    old_legacy, new_legacy = ws.checkpoints_dir / ".m.safetensors.k2j4h6g8.tmp", ws.checkpoints_dir / ".upload-q1w2e3r4.part"
    other = ws.checkpoints_dir / ".keep-me"
    for p in [*stale, live, old_legacy, new_legacy, other]:
        p.write_bytes(b"x")
    os.utime(old_legacy, (0, 0))                              # a temporary file of an older version, long dead
    assert ws.summary()["checkpoints"] == 0
    assert not any(p.exists() for p in [*stale, old_legacy])
    assert live.exists() and new_legacy.exists() and other.exists()


def test_an_upload_in_progress_is_named_after_its_process(tmp_path, monkeypatch):
    from dat import checkpoint

    seen, original = [], checkpoint.load_checkpoint

    def spy(path):
        seen.append(os.path.basename(path))
        return original(path)

    monkeypatch.setattr(checkpoint, "load_checkpoint", spy)
    ws = Workspace(tmp_path)
    ws.store_checkpoint_upload("model.safetensors", tiny_checkpoint(tmp_path / "s.safetensors").read_bytes())
    assert seen and seen[0].startswith(f".upload.{os.getpid()}.") and seen[0].endswith(".tmp")


def test_missing_data_message_names_the_missing_cifar_files(tmp_path):
    from dat.errors import UserError

    assert ui_helpers.missing_data_message("digits", tmp_path) is None  # embedded
    message = ui_helpers.missing_data_message("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in message and "data_batch_1" in message
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    for name in names:
        (folder / name).write_bytes(b"")
    assert ui_helpers.missing_data_message("cifar10", tmp_path) is None
    (folder / "test_batch").unlink()
    message = ui_helpers.missing_data_message("cifar10", tmp_path)
    assert "test_batch" in message and "data_batch_1" not in message
    assert "cifar-100-python" in ui_helpers.missing_data_message("cifar100", tmp_path)
    with pytest.raises(UserError):
        ui_helpers.missing_data_message("mnist", tmp_path)


def test_every_crossbar_field_has_a_label_in_words_with_its_unit():
    import dataclasses

    from dat.noise.crossbar import CROSSBAR_UNITS, CrossbarParams

    fields = [f.name for f in dataclasses.fields(CrossbarParams)]
    assert list(ui_helpers.PARAMETER_LABELS) == fields
    for name, label in ui_helpers.PARAMETER_LABELS.items():
        assert "_" not in name or name not in label  # words, not the field's code name
        if CROSSBAR_UNITS[name] in ("cells", "s", "fraction of g_max"):
            assert f"({CROSSBAR_UNITS[name]}" in label or f"{CROSSBAR_UNITS[name]})" in label


def test_time_since_programming_from_a_preset_or_a_free_value():
    from dat.errors import UserError

    assert ui_helpers.time_since_programming("1 week", 5.0) == 7 * 24 * 3600
    assert ui_helpers.time_since_programming(ui_helpers.OTHER_TIME, 42.0) == 42.0
    assert ui_helpers.time_choice(86400.0) == "1 day" and ui_helpers.time_choice(42.0) == ui_helpers.OTHER_TIME
    for choice, other in ((ui_helpers.OTHER_TIME, 0.5), (ui_helpers.OTHER_TIME, float("nan")), ("1 year", 1.0)):
        with pytest.raises(UserError):
            ui_helpers.time_since_programming(choice, other)


def test_noise_over_time_matches_the_profile_at_each_time():
    from dat import profile_figures as pf
    from dat.noise.crossbar import PRESETS, wan2022_prog_std

    device = PRESETS["device-B"]
    times = [1.0, 3600.0, 86400.0, 604800.0]
    curves = pf.noise_over_time(device, times)
    for i, t in enumerate(times):  # reference: the variance of the profile bound at time t
        profile = pf.tile_profile(device.replace(t_seconds=t), (4, 4))
        np.testing.assert_allclose(curves["total"][i], np.sqrt(profile.variance().numpy().mean()), rtol=1e-12)
        np.testing.assert_allclose(curves["stds"]["prog"][i], device.scale * wan2022_prog_std(t), rtol=1e-12)
        np.testing.assert_allclose(curves["mean_shift"][i], -0.01 * np.log10(t), atol=1e-15)
    assert curves["total"][2] > curves["total"][1] > curves["total"][0]  # programming noise grows to a day
    default = pf.noise_over_time(device)
    assert device.t_seconds in default["t_seconds"] and default["t_seconds"].min() == 1.0
    fig = pf.noise_over_time_figure({"device B": default})
    assert fig.layout.xaxis.type == "log" and "fraction of g_max" in fig.layout.yaxis.title.text
    with pytest.raises(ValueError):
        pf.noise_over_time(device, [0.5])
    fitted = ui_helpers.fit_measurements("t.npz", _maps_npz(np.random.default_rng(0).normal(size=(30, 2, 2))))
    with pytest.raises(ValueError, match="time model"):
        pf.noise_over_time(fitted)


def _maps_npz(maps) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, maps=maps)
    return buf.getvalue()


def test_fit_summary_reads_as_words_and_its_condition_number_is_right():
    maps = np.random.default_rng(2).normal(scale=0.05, size=(12, 3, 3))  # 12 maps, 9 cells
    fitted = ui_helpers.fit_measurements("lab.npz", _maps_npz(maps), estimator="oas", k=2)
    rows = {r["quantity"]: r["value"] for r in ui_helpers.fit_summary(fitted)}
    assert rows["estimator"].startswith("OAS")
    assert rows["samples"] == "12 repeated maps of a 3 x 3 tile (9 cells)"
    evals = np.linalg.eigvalsh(fitted.sigma_)
    assert rows["condition number of Sigma"].startswith(f"{evals.max() / evals.min():.3g} ")
    assert rows["shrinkage intensity"].startswith(f"{fitted.shrinkage_:.3f} ")
    assert all(isinstance(v, str) and "{" not in v for v in rows.values())
    with pytest.warns(UserWarning, match="poorly determined"):
        few = ui_helpers.fit_measurements("lab.npz", _maps_npz(maps[:5]))
    assert "fewer maps than cells" in {r["quantity"]: r["value"] for r in ui_helpers.fit_summary(few)}["samples"]
    assert ui_helpers.fit_sentence(fitted) == "Fitted 'lab' from 12 maps of a 3 x 3 tile (OAS (oracle approximating shrinkage))."


def test_device_choices_list_each_device_once(tmp_path):
    from dat.noise.crossbar import PRESETS

    ws = Workspace(tmp_path)
    ws.save_profile("device-A", PRESETS["device-A"])  # the demo's copy of the preset
    ws.save_profile("device-B", PRESETS["device-A"])  # a preset's name, another device
    ws.save_profile("lab", PRESETS["device-B"])
    choices = ui_helpers.device_choices(ws)
    assert list(choices) == ["device-A", "device-B", "device-B (saved)", "lab (saved)"]
    assert choices["device-A"] == "device-A"
    # a saved job that named the demo's file is still accepted (the file is a saved profile)
    assert str(tmp_path / "profiles" / "device-A.npz") in ui_helpers._device_specs(ws)


def test_a_resumed_job_reads_data_from_the_workspace_data_folder_not_the_files(tmp_path):
    from dat.config import resolve

    ws = Workspace(tmp_path)
    saved = resolve("digits", data_root="/somewhere/else", device="device-A").to_dict()
    config = ui_helpers._saved_config(ws, saved, [])
    assert config.data_root == str(tmp_path / "data") == str(ui_helpers.workspace_data_root(ws))
