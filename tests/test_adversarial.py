"""Adversarial inputs at every file boundary, through both faces.

The CLI (`python -m faces.cli ...` in a subprocess, or `faces.cli.main` in process for the many
variants) must answer a bad file with exit status 2 and a message on stderr that names the file and
says what was expected, never a traceback. The Device profiles page (Streamlit's AppTest) must show
`st.error` and keep running. In every case: nothing is written outside the working folder, no
half-written file is left behind, and no code runs from a file (a pickle that would write a marker
file when unpickled is planted in .npz and .npy files).
"""

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dat.noise.crossbar import PRESETS
from dat.noise.dense import DenseDevice
from dat.errors import UserError
from dat.noise.io import _hash, load_dense, load_device, save_device

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"


class _Marker:
    """Unpickling this writes a marker file: proof that a loader ran code from a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "code ran"))


def pickle_npz(path: Path, marker: Path, key: str) -> Path:
    np.savez(path, **{key: np.array([_Marker(marker)], dtype=object)})
    return path


def truncated(path: Path, good: bytes) -> Path:
    path.write_bytes(good[: len(good) // 2])
    return path


def foreign_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "a zip archive from another program")
    return path


def forged_profile(path: Path, kind: str, params: dict, arrays: dict) -> Path:
    """A profile whose content hash is valid for its (wrong) contents, as a careless tool would write."""
    meta = {"format": "dat-profile", "format_version": 1, "kind": kind, "name": "forged",
            "parameters": params, "units": {}, "targets": None, "content_hash": _hash(kind, params, arrays)}
    np.savez(path, __meta__=np.array(json.dumps(meta)), **arrays)
    return path


def listing(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


# -- bad files, by the command that reads them ---------------------------------------------------
def bad_files(tmp: Path, marker: Path) -> list[tuple[str, Path, str]]:
    """(command, file, phrase the message must hold) for every kind of bad input."""
    good_profile = tmp / "good.npz"
    save_device(good_profile, PRESETS["device-A"])
    sigma = np.eye(4)
    good_dense = io.BytesIO()
    np.savez(good_dense, sigma=sigma)
    maps = np.random.default_rng(0).normal(size=(12, 3, 3))
    (tmp / "empty.npz").write_bytes(b"")
    (tmp / "empty.csv").write_bytes(b"")
    (tmp / "picture.npz").write_bytes(PNG)
    (tmp / "binary.csv").write_bytes(PNG + bytes(range(256)))
    (tmp / "pickle.npy").write_bytes(pickle.dumps(_Marker(marker)))
    np.save(tmp / "objects.npy", np.array([_Marker(marker)], dtype=object))
    np.savez(tmp / "nan_sigma.npz", sigma=np.full((3, 3), np.nan))
    np.savez(tmp / "not_psd.npz", sigma=np.array([[1.0, 2.0], [2.0, 1.0]]))
    np.savez(tmp / "wide_sigma.npz", sigma=np.ones((3, 4)))
    np.savez(tmp / "text_sigma.npz", sigma=np.array(["a", "b"]))
    np.savez(tmp / "nan_maps.npz", maps=np.where(maps > 1.5, np.nan, maps))
    np.savez(tmp / "flat_maps.npz", maps=maps.reshape(12, 9))
    np.savez(tmp / "text_maps.npz", maps=np.array(["a"] * 9))
    forged_profile(tmp / "forged_fitted.npz", "fitted",
                   {"estimator": "ledoitwolf", "k": 3, "tile_shape": "3x3", "shrinkage": 0.1, "n_samples": 5},
                   {"mu": np.zeros(9), "sigma": np.eye(9)})
    forged_profile(tmp / "forged_fitted_nokeys.npz", "fitted", {}, {"mu": np.zeros(9), "sigma": np.eye(9)})
    forged_profile(tmp / "forged_estimator.npz", "fitted",
                   {"estimator": ["oas"], "k": 3, "tile_shape": [3, 3], "shrinkage": 0.1, "n_samples": 5},
                   {"mu": np.zeros(9), "sigma": np.eye(9)})
    forged_profile(tmp / "forged_crossbar.npz", "crossbar", {**PRESETS["device-A"].to_dict(), "ell": "long"}, {})
    forged_profile(tmp / "forged_dense.npz", "dense", {"n": "four"}, {"mu": np.zeros(4), "sigma": np.eye(4)})
    forged_profile(tmp / "forged_dense_nan.npz", "dense", {"n": 2},
                   {"mu": np.zeros(2), "sigma": np.array([[1.0, np.nan], [np.nan, 1.0]])})
    return [
        ("inspect", tmp / "empty.npz", "found an empty file"),
        ("inspect", truncated(tmp / "truncated.npz", good_profile.read_bytes()), "npz"),
        ("inspect", foreign_zip(tmp / "foreign.npz"), "not a numpy array"),
        ("inspect", tmp / "picture.npz", "found a PNG image"),
        ("inspect", pickle_npz(tmp / "pickled_profile.npz", marker, "__meta__"), "never loaded"),
        ("inspect", tmp / "forged_fitted.npz", "'tile_shape' to be [rows, cols]"),
        ("inspect", tmp / "forged_fitted_nokeys.npz", "expected parameter 'estimator'"),
        ("inspect", tmp / "forged_estimator.npz", "'estimator' to be one of"),
        ("inspect", tmp / "forged_crossbar.npz", "ell"),
        ("inspect", tmp / "forged_dense.npz", "'n' to be a positive integer"),
        ("inspect", tmp / "forged_dense_nan.npz", "finite"),
        ("dense", tmp / "empty.npz", "found an empty file"),
        ("dense", truncated(tmp / "truncated_dense.npz", good_dense.getvalue()), "truncated or corrupted"),
        ("dense", tmp / "picture.npz", "found a PNG image"),
        ("dense", pickle_npz(tmp / "pickled_sigma.npz", marker, "sigma"), "never loaded"),
        ("dense", tmp / "pickle.npy", "found a Python pickle"),
        ("dense", tmp / "objects.npy", "never loaded"),
        ("dense", tmp / "nan_sigma.npz", "finite"),
        ("dense", tmp / "not_psd.npz", "--repair"),
        ("dense", tmp / "wide_sigma.npz", "square"),
        ("dense", tmp / "text_sigma.npz", "to hold numbers"),
        ("dense", good_profile, "dat profile inspect"),
        ("fit", tmp / "empty.npz", "found an empty file"),
        ("fit", tmp / "empty.csv", "found no samples"),
        ("fit", tmp / "binary.csv", "expected a text .csv file"),
        ("fit", truncated(tmp / "truncated_maps.npz", good_dense.getvalue()), "truncated or corrupted"),
        ("fit", pickle_npz(tmp / "pickled_maps.npz", marker, "maps"), "never loaded"),
        ("fit", tmp / "nan_maps.npz", "finite"),
        ("fit", tmp / "flat_maps.npz", "[n_samples, rows, cols]"),
        ("fit", tmp / "text_maps.npz", "to hold numbers"),
    ]


def run_main(argv, cwd: Path, capsys) -> tuple[int, str]:
    """`dat ARGV` in process from ``cwd`` (the same code as the console script, minus start-up)."""
    from faces.cli import main

    old = os.getcwd()
    os.chdir(cwd)
    try:
        code = main(argv)
    finally:
        os.chdir(old)
    return code, capsys.readouterr().err


def run_cli(argv, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "faces.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def command(kind: str, path: Path) -> list[str]:
    out = ["-o", "out.npz"] if kind != "inspect" else []
    return ["profile", kind, str(path), *out]


def test_every_bad_file_gets_a_message_exit_2_and_no_output(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "marker.txt"
    cases = bad_files(tmp_path, marker)
    (work / "out.npz").write_bytes(b"a good earlier result")
    before = listing(tmp_path)
    for kind, path, phrase in cases:
        code, err = run_main(command(kind, path), work, capsys)
        assert code == 2, (kind, path.name, err)
        assert path.name in err and phrase in err, (kind, path.name, err)
        assert "Traceback" not in err and "allow_pickle" not in err and "load it unsafely" not in err, err
    assert not marker.exists(), "a loader ran code from a file"
    assert listing(tmp_path) == before  # nothing new anywhere: no output, no temporary file
    assert (work / "out.npz").read_bytes() == b"a good earlier result"


def test_library_readers_raise_user_errors_not_eof_or_key_errors(tmp_path):
    marker = tmp_path / "marker.txt"
    for kind, path, phrase in bad_files(tmp_path, marker):
        reader = {"inspect": load_device, "dense": load_dense}.get(kind)
        if reader is None:
            from dat.noise.fitted import load_maps as reader
        with pytest.raises(UserError, match=None) as info:
            reader(path)
        assert phrase in str(info.value), (path.name, str(info.value))
    assert not marker.exists()


@pytest.mark.parametrize("kind, name", [("inspect", "picture.npz"), ("dense", "pickled_sigma.npz"),
                                        ("fit", "binary.csv"), ("inspect", "forged_fitted.npz")])
def test_the_console_command_exits_2_with_a_message_and_no_traceback(tmp_path, kind, name):
    marker = tmp_path / "marker.txt"
    paths = {p.name: p for _, p, _ in bad_files(tmp_path, marker)}
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli(command(kind, paths[name]), work)
    assert result.returncode == 2, result.stderr
    assert name in result.stderr and "expected" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists() and not list(work.iterdir())


def test_the_profile_module_entry_point_catches_user_errors_too(tmp_path, capsys):
    from faces.cli import main

    (tmp_path / "empty.npz").write_bytes(b"")
    assert main(["profile", "inspect", str(tmp_path / "empty.npz")]) == 2
    assert "empty.npz: expected a .npz archive" in capsys.readouterr().err


# -- names (issue item 9) ------------------------------------------------------------------------
@pytest.mark.parametrize("flag", [["--name", "mydev"], ["--set", "name=mydev"]])
def test_make_accepts_a_name(tmp_path, capsys, flag):
    code, err = run_main(["profile", "make", "device-A", *flag], tmp_path, capsys)
    assert code == 0, err
    assert load_device(tmp_path / "profiles" / "mydev.npz") == PRESETS["device-A"].replace(name="mydev")


@pytest.mark.parametrize("argv", [
    ["profile", "make", "device-A", "--name", "../../escaped"],
    ["profile", "make", "device-A", "--set", "name=../escaped"],
    ["profile", "fit", "MAPS", "--name", "../../escaped"],
    ["profile", "dense", "SIGMA", "--name", "ABSOLUTE"],
])
def test_a_name_with_a_folder_is_refused_by_the_dashboards_rule(tmp_path, capsys, argv):
    from dat.fileio import check_name

    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    np.savez(tmp_path / "maps.npz", maps=np.random.default_rng(0).normal(size=(12, 3, 3)))
    np.savez(tmp_path / "sigma.npz", sigma=np.eye(3))
    places = {"MAPS": tmp_path / "maps.npz", "SIGMA": tmp_path / "sigma.npz", "ABSOLUTE": tmp_path / "escaped"}
    argv = [str(places.get(a, a)) for a in argv]
    before = listing(tmp_path)
    code, err = run_main(argv, work, capsys)
    assert code == 2 and "profile name" in err and "Traceback" not in err
    with pytest.raises(ValueError) as rule:  # the very rule the dashboard's save form applies
        check_name(argv[argv.index("--name") + 1] if "--name" in argv else "../escaped")
    assert str(rule.value).split(" must ")[1] in err
    assert listing(tmp_path) == before and not (tmp_path.parent / "escaped.npz").exists()


# -- misleading messages (issue item 10) -----------------------------------------------------------
def test_counts_are_reported_under_their_own_flag(tmp_path, capsys):
    save_device(tmp_path / "a.npz", PRESETS["device-A"])
    for flag in ("--top", "-k"):
        with pytest.raises(SystemExit) as exit_:
            run_main(["profile", "inspect", str(tmp_path / "a.npz"), flag, "0"], tmp_path, capsys)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}" in err and "expected a positive integer, found 0" in err


def test_messages_name_commands_not_python_functions(tmp_path, capsys):
    np.savez(tmp_path / "plain.npz", sigma=np.eye(2))
    code, err = run_main(["profile", "inspect", str(tmp_path / "plain.npz")], tmp_path, capsys)
    assert code == 2 and "`dat profile dense FILE`" in err and "load_dense" not in err
    np.savez(tmp_path / "bad.npz", sigma=np.array([[1.0, 2.0], [2.0, 1.0]]))
    code, err = run_main(["profile", "dense", str(tmp_path / "bad.npz")], tmp_path, capsys)
    assert code == 2 and "--repair" in err and "use repair" not in err


def test_a_saved_dense_profile_loads_and_binds_for_display(tmp_path):
    from dat import profile_figures as pf

    rng = np.random.default_rng(2)
    b = rng.normal(size=(10, 10))
    save_device(tmp_path / "d.npz", DenseDevice(np.zeros(10), b @ b.T, name="d"))
    prof = pf.tile_profile(load_device(tmp_path / "d.npz"), (32, 32))  # the page's tile size is ignored
    assert prof.n == 10 and pf.noise_maps(prof, num=2).shape == (2, 2, 5)
    np.testing.assert_allclose(pf.sigma_window(prof, 10), b @ b.T)


# -- the Device profiles page ----------------------------------------------------------------------
TIMEOUT = 240


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty workspace with two saved profiles: one dense, one broken."""
    root = tmp_path / "ws"
    (root / "profiles").mkdir(parents=True)
    rng = np.random.default_rng(3)
    b = rng.normal(size=(24, 24)) * 0.05
    save_device(root / "profiles" / "dense-dev.npz", DenseDevice(np.zeros(24), b @ b.T, name="dense-dev"))
    truncated(root / "profiles" / "broken.npz", (root / "profiles" / "dense-dev.npz").read_bytes())
    monkeypatch.setenv("DAT_WORKSPACE", str(root))
    return root


def profiles_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/1_Device_profiles.py").run()
    assert not at.exception, at.exception
    return at


def errors(at) -> str:
    return " | ".join(str(e.value) for e in at.error)


def test_page_shows_a_saved_dense_profile_and_a_broken_one_as_an_error(workspace):
    at = profiles_page()
    at.selectbox(key="choice_A").set_value("dense-dev (saved)").run()
    assert not at.exception and not at.error
    assert "A dense device: its n = 24 values" in " ".join(c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 6  # device B is parametric: its noise against time too
    at.selectbox(key="choice_B").set_value("broken (saved)").run()
    assert not at.exception
    assert "broken.npz" in errors(at) and "truncated or corrupted" in errors(at)
    assert len(at.get("plotly_chart")) == 4  # device A is still shown: maps, Sigma A, correlation, spectrum


def test_page_refuses_bad_uploads_with_the_uploads_own_name(workspace, tmp_path):
    marker = tmp_path / "marker.txt"
    maps = np.random.default_rng(0).normal(size=(12, 3, 3))
    pickled = io.BytesIO()
    np.savez(pickled, maps=np.array([_Marker(marker)], dtype=object))
    nan = io.BytesIO()
    np.savez(nan, maps=np.where(maps > 1.0, np.nan, maps))
    good = io.BytesIO()
    np.savez(good, maps=maps)
    uploads = [("empty.npz", b"", "empty"), ("photo.npz", PNG, "found a PNG image"),
               ("cut.npz", good.getvalue()[:300], "truncated or corrupted"),
               ("zip.npz", foreign_zip(tmp_path / "f.npz").read_bytes(), "not a numpy array"),
               ("pickled.npz", pickled.getvalue(), "never loaded"), ("nan.npz", nan.getvalue(), "finite"),
               ("binary.csv", PNG + bytes(range(256)), "expected a text .csv file")]
    before = listing(workspace)
    at = profiles_page()
    for name, data, phrase in uploads:
        at.file_uploader(key="measurements").set_value((name, data, "application/octet-stream")).run()
        at.button(key="fit").click().run()
        assert not at.exception, (name, at.exception)
        text = errors(at)
        assert text.count(name) >= 2 and phrase in text, (name, text)  # the page's prefix and the message
        assert "/tmp" not in text and str(tmp_path) not in text  # no internal temporary path
        assert "allow_pickle" not in text
    assert not marker.exists()
    assert listing(workspace) == before
    assert len(at.get("plotly_chart")) == 6  # the page kept working


def test_upload_limit_is_one_number_for_the_widget_and_the_library():
    from streamlit.testing.v1 import AppTest

    from faces.dashboard.helpers import MAX_MEASUREMENT_BYTES, MAX_MEASUREMENT_MB, fit_measurements

    assert MAX_MEASUREMENT_BYTES == MAX_MEASUREMENT_MB * 2**20  # Streamlit's MB are 2**20 bytes
    at = AppTest.from_file(str(ROOT / "pages" / "1_Device_profiles.py"), default_timeout=TIMEOUT).run()
    widget = at.get("file_uploader")[0].proto
    assert widget.max_upload_size_mb == MAX_MEASUREMENT_MB
    with pytest.raises(UserError, match=f"big.npz' is {MAX_MEASUREMENT_MB}.0 MB; the limit is {MAX_MEASUREMENT_MB} MB"):
        fit_measurements("big.npz", b"\0" * (MAX_MEASUREMENT_BYTES + 1))


# -- a broken profile chosen on a landscape page, or given to the landscape command ----------------
@pytest.fixture
def demo_with_broken_profile(demo_workspace, tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "ws"
    shutil.copytree(demo_workspace, root)
    (root / "profiles" / "broken.npz").write_bytes(PNG)
    monkeypatch.setenv("DAT_WORKSPACE", str(root))
    return root


def test_noise_curves_page_shows_a_broken_profile_as_an_error(demo_with_broken_profile):
    from streamlit.testing.v1 import AppTest

    before = listing(demo_with_broken_profile)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("pages/4_Noise_curves.py").run()
    at.multiselect(key="curve_devices").set_value(["broken (saved)"])
    at.slider(key="curve_points").set_value(5)
    at.number_input(key="curve_draws").set_value(2)
    at.button(key="FormSubmitter:curves_form-Compute curves").click().run()
    from faces.dashboard import jobs

    for job in jobs.registry().active():  # the page runs the curves as a landscape job: wait for it
        if job.lane == jobs.LANDSCAPE_LANE:
            jobs.registry().wait(job.id, timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert "broken.npz" in errors(at) and "found a PNG image" in errors(at)
    # Nothing half-written: only the job list (which records the failed job) is new.
    assert listing(demo_with_broken_profile) - {"jobs.json"} == before


def test_the_landscape_entry_point_exits_2_on_a_broken_profile(demo_with_broken_profile, tmp_path, capsys):
    from faces.cli import main

    ckpt = demo_with_broken_profile / "checkpoints" / "sgd.safetensors"
    broken = demo_with_broken_profile / "profiles" / "broken.npz"
    code = main(["landscape", "1d", "--checkpoint", f"SGD={ckpt}", "--device", f"A={broken}", "--out",
                 str(tmp_path / "out"), "--no-cache", "--quiet", "--max-samples", "32"])
    err = capsys.readouterr().err
    assert code == 2 and "broken.npz: expected a .npz archive" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("data", [b"\x80\x04pickle", b"\0" * 16, PNG])
def test_a_bad_checkpoint_upload_is_named_as_uploaded_not_by_a_temporary_path(tmp_path, data):
    from faces.dashboard.workspace import Workspace

    ws = Workspace(tmp_path)
    with pytest.raises(ValueError) as info:
        ws.store_checkpoint_upload("mine.safetensors", data)
    text = str(info.value)
    assert "mine.safetensors" in text and ".part" not in text and str(tmp_path) not in text
    assert not [p for p in (tmp_path / "checkpoints").iterdir()]  # nothing kept, not even a temporary file


def test_the_planted_pickle_runs_under_an_unsafe_loader(tmp_path):
    """The control for every 'no code ran' assertion above: the marker does appear when pickle is allowed."""
    marker = tmp_path / "marker.txt"
    np.load(pickle_npz(tmp_path / "p.npz", marker, "maps"), allow_pickle=True)["maps"]
    assert marker.read_text() == "code ran"


def test_checkpoint_upload_limit_is_the_servers_in_the_same_megabytes():
    import tomllib

    from faces.dashboard.workspace import MAX_UPLOAD_BYTES, Workspace

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 2**20 == MAX_UPLOAD_BYTES  # the widget's limit is the library's
    with pytest.raises(ValueError, match=r"is 2\.0 MB; the limit is 1\.0 MB"):
        Workspace(ROOT).store_checkpoint_upload("big.safetensors", b"\0" * 2**21, max_bytes=2**20)
