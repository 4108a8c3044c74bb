"""The Instruments page under AppTest: it renders its four tabs, makes a twin, and runs the aging
and sharpness instruments on the miniature demo workspace."""

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGE = "pages/7_Instruments.py"


@pytest.fixture
def workspace(demo_workspace, tmp_path, monkeypatch):
    root = tmp_path / "ws"
    shutil.copytree(demo_workspace, root)
    monkeypatch.setenv("DAT_WORKSPACE", str(root))
    return root


def page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600).run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def test_page_renders_its_four_instruments(workspace):
    at = page()
    assert [t.label for t in at.tabs] == ["Twins", "Transfer matrix", "Aging", "Sharpness"]
    assert not at.error


def test_twin_form_shows_equal_cell_variances_and_saves_the_twin(workspace):
    at = page()
    at.selectbox(key="twin_device").set_value("device-B")
    at.text_input(key="twin_name").set_value("b-diag")
    at.button[0].click().run()  # the twin form's submit button comes first on the page
    assert not at.exception and not at.error, (at.exception, at.error)
    table = at.dataframe[0].value
    assert list(table["profile"]) == ["device-B", "device-B-diag"]
    assert table["trace"][0] == pytest.approx(table["trace"][1], rel=1e-12)
    assert (workspace / "profiles" / "b-diag.npz").is_file()


def test_aging_and_sharpness_run_on_the_demo(workspace):
    at = page()
    at.number_input(key="aging_draws").set_value(2)
    at.multiselect(key="aging_devices").set_value(["device-A"])
    at.multiselect(key="aging_models").set_value([at.multiselect(key="aging_models").options[0]])
    submit = [b for b in at.button if b.label == "Evaluate from 1 s to 1 year"][0]
    submit.click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert len(at.dataframe) >= 1 and len(at.dataframe[-1].value) == 7  # one row per time point
    at.number_input(key="sharp_probes").set_value(2)
    at.number_input(key="sharp_draws").set_value(2)
    at.number_input(key="sharp_samples").set_value(64)
    at.number_input(key="sharp_eigen").set_value(1)
    at.multiselect(key="sharp_devices").set_value(["device-A"])
    [b for b in at.button if b.label == "Compute sharpness"][0].click().run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert any(m.label.startswith("Spearman") for m in at.metric)
