"""What keeps the dashboard's first render fast: the home page, the workspace listing and the forms of
the pages never import torch (seconds on a fresh server), reading a fitted profile never imports
scikit-learn, and torch loads in the background once a page has drawn."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "sklearn", "scipy")  # (streamlit itself imports plotly)


def imported_after(code: str, workspace: Path) -> dict:
    """Run ``code`` in a fresh interpreter on ``workspace``; it leaves a dict ``out``: that dict, plus
    which heavy libraries ended up in sys.modules."""
    script = code + f"\nimport json, sys\nout['heavy'] = [m for m in {HEAVY!r} if m in sys.modules]\nprint(json.dumps(out))\n"
    env = {"DAT_WORKSPACE": str(workspace), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_home_page_and_workspace_listing_do_not_import_torch(demo_workspace):
    out = imported_after(f"""
from streamlit.testing.v1 import AppTest
from faces.dashboard import warmup
warmup.MODULES = ()  # what the page itself imports, without the background warm-up
at = AppTest.from_file({str(ROOT / 'app.py')!r}, default_timeout=120).run()
assert not at.exception, at.exception
from faces.dashboard.workspace import Workspace
ws = Workspace.default()
rows = ws.list_checkpoints()
out = {{"metrics": {{m.label: m.value for m in at.metric}}, "trios": sorted(ws.trios(rows)),
        "methods": sorted(r["method"] for r in rows)}}
""", demo_workspace)
    # the listing still reads every checkpoint's metadata (from its header)
    assert out["metrics"]["Checkpoints"] == "3" and out["trios"] == [""]
    assert out["methods"] == ["dat-fast", "dat-fast", "sgd-bn"]
    assert out["heavy"] == []


# Pages whose whole first run (forms, job list, Table I from stored numbers) needs no torch.
LIGHT_PAGES = ("2_Train", "3_Models", "4_Noise_curves", "5_Loss_surfaces", "6_Compare_devices", "7_Instruments")


@pytest.mark.parametrize("page", LIGHT_PAGES)
def test_page_forms_draw_without_torch(demo_workspace, page):
    out = imported_after(f"""
from streamlit.testing.v1 import AppTest
from faces.dashboard import warmup
warmup.MODULES = ()
at = AppTest.from_file({str(ROOT / 'app.py')!r}, default_timeout=120).run()
at.switch_page("pages/{page}.py").run()
assert not at.exception, at.exception
out = {{"buttons": len(at.button), "selectboxes": len(at.selectbox)}}
""", demo_workspace)
    assert out["selectboxes"] > 0 and "torch" not in out["heavy"]  # (Table I's intervals use scipy)


def test_device_profiles_draws_its_device_forms_before_torch(demo_workspace):
    """Torch is first imported after both devices' selectors and parameter forms are on the page."""
    out = imported_after(f"""
import sys
import streamlit as st
from streamlit.testing.v1 import AppTest
from faces.dashboard import warmup
warmup.MODULES = ()
events = []

class Watch:  # notes the moment torch is first imported
    def find_spec(self, name, path, target=None):
        if name == "torch" and "torch" not in events:
            events.append("torch")
        return None

for widget in ("selectbox", "form_submit_button"):
    def wrapped(*args, _real=getattr(st, widget), **kwargs):
        events.append(str(args[0]) if args else "")
        return _real(*args, **kwargs)
    setattr(st, widget, wrapped)
at = AppTest.from_file({str(ROOT / 'app.py')!r}, default_timeout=600).run()
sys.meta_path.insert(0, Watch())
at.switch_page("pages/1_Device_profiles.py").run()
assert not at.exception, at.exception
out = {{"events": events}}
""", demo_workspace)
    events = out["events"]
    assert "torch" in events and "torch" in out["heavy"]  # the page does need it, after its forms
    before = events[:events.index("torch")]
    assert {"Device A", "Device B"} <= set(before) and before.count("Apply") == 2, events


def test_warm_up_imports_torch_and_the_landscape_library_once(demo_workspace):
    out = imported_after("""
from faces.dashboard import warmup
first = warmup.start()
assert warmup.start() is first  # once per process
first.join(300)
import sys
out = {"loaded": [m for m in warmup.MODULES if m in sys.modules], "alive": first.is_alive()}
""", demo_workspace)
    from faces.dashboard import warmup

    assert out["loaded"] == list(warmup.MODULES) and not out["alive"]


def test_reading_checkpoint_headers_needs_no_torch_and_fitted_profiles_no_sklearn(demo_workspace):
    out = imported_after(f"""
import sys
from dat.checkpoint import list_checkpoints, read_meta
rows = list_checkpoints({str(demo_workspace / 'checkpoints')!r})
out = {{"n": len(rows), "arch": read_meta(rows[0]["path"])["model"]["arch"], "torch": "torch" in sys.modules}}
import dat.noise.fitted
import dat.noise.io
out["estimators"] = sorted(dat.noise.fitted.ESTIMATORS)
""", demo_workspace)
    assert out["n"] == 3 and out["arch"] == "cnn6"
    assert not out["torch"]
    assert out["estimators"] == ["ledoitwolf", "oas"]
    assert "sklearn" not in out["heavy"]  # scikit-learn loads when a fit is made (test_measure fits)


def test_device_profiles_page_decomposes_each_device_once(demo_workspace, monkeypatch):
    """The spectrum, the captured variance and both low-rank factors of a device share one profile:
    its plain eigen-decomposition is made once (it was made twice, the slowest part of the page), and
    a rerun with another seed of the sampled maps makes none."""
    from streamlit.testing.v1 import AppTest

    from dat.noise import linalg

    monkeypatch.setenv("DAT_WORKSPACE", str(demo_workspace))
    calls = []
    real = linalg.top_eig

    def counted(matvec, m, k, **kwargs):
        calls.append((m, k))
        return real(matvec, m, k, **kwargs)

    monkeypatch.setattr(linalg, "top_eig", counted)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600).run()
    at.switch_page("pages/1_Device_profiles.py").run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 6 and len(at.metric) == 2
    on_page = len(calls)
    at.sidebar.number_input[2].set_value(1).run()  # the seed of the sampled maps
    assert not at.exception, at.exception
    assert len(calls) == on_page  # nothing decomposed again

    # The reference: what one profile object per device needs for the page's numbers at its defaults
    # (tile 32, 50 eigenvalues shown, k = 10).
    from dat import profile_figures as pf
    from dat.noise.crossbar import PRESETS

    calls.clear()
    for name in ("device-A", "device-B"):
        profile = pf.tile_profile(PRESETS[name], (32, 32))
        profile.spectrum(50), profile.captured_variance(10), profile.captured(10)
    assert on_page == len(calls) > 0
