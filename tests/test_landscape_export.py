"""Figures, paper bundles, reproduction from the bundle's JSON, the summary numbers and the CLI."""

import io
import json
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest
import torch

from dat.checkpoint import save_checkpoint
from dat.models import build_model
from landscape import export, figures
from landscape.cli import main as cli_main
from landscape.spec import LandscapeSpec, run_spec
from landscape.summary import basin_width, compare_devices

SMALL = dict(dataset="digits", split="test", max_samples=80, batch_size=256)


@pytest.fixture(scope="module")
def trio_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for seed, label in enumerate(("SGD", "DAT-A", "DAT-B")):
        torch.manual_seed(seed)
        model = build_model("cnn6", batchnorm=True, in_channels=1, image_size=8, num_classes=10, width=4, hidden=16)
        paths[label] = str(save_checkpoint(folder / f"{label}.safetensors", model, {"method": label}))
    return paths


@pytest.fixture(scope="module")
def surface(trio_paths):
    spec = LandscapeSpec(kind="surface", checkpoints=trio_paths, resolution=(3, 3), draws=2, **SMALL)
    return spec, run_spec(spec)


@pytest.fixture(scope="module")
def curves(trio_paths):
    spec = LandscapeSpec(kind="curves", checkpoints=trio_paths, num_alphas=5, draws=3, **SMALL)
    return spec, run_spec(spec)


def test_bundle_files_exist_and_open(surface, tmp_path):
    spec, res = surface
    figs = {"fig1": figures.fig1_figure(res)}
    paths = export.export_bundle(res, tmp_path, figures=figs, spec=spec)
    names = {p.name for p in paths}
    for w in ("single", "double"):
        assert {f"fig1_{w}.png", f"fig1_{w}.svg", f"fig1_{w}.pdf"} <= names
    assert {"numbers.csv", "numbers.npz", "reproduce.json"} <= names
    assert all(p.stat().st_size > 0 for p in paths)
    png = (tmp_path / "fig1_single.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # 300 DPI at 3.5 in: the PNG is 1050 px wide (IHDR width field)
    assert int.from_bytes(png[16:20], "big") == 1050
    assert (tmp_path / "fig1_double.pdf").read_bytes()[:5] == b"%PDF-"
    root = ET.parse(tmp_path / "fig1_single.svg").getroot()
    assert root.tag.endswith("svg")
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temporary files


def test_reproduce_json_recomputes_the_numbers(surface, curves, tmp_path):
    for spec, res in (surface, curves):
        folder = tmp_path / res.kind
        export.export_bundle(res, folder, formats=("csv", "npz"), spec=spec)
        again = export.reproduce(folder / "reproduce.json")
        stored = export.load_numbers(folder)
        for key, arr in again.to_arrays().items():
            np.testing.assert_allclose(arr, stored[key], rtol=1e-7, atol=1e-9, err_msg=key)


def test_reproduce_refuses_changed_checkpoints(surface, tmp_path, trio_paths):
    spec, res = surface
    export.export_bundle(res, tmp_path, formats=("npz",), spec=spec)
    record = json.loads((tmp_path / "reproduce.json").read_text())
    record["inputs"]["models"]["SGD"] = "0" * 64
    with pytest.raises(ValueError, match="models differ"):
        export.reproduce(record)
    record["spec"] = None
    with pytest.raises(ValueError, match="without a spec"):
        export.reproduce(record)


def test_csv_holds_every_grid_point(surface):
    _, res = surface
    rows = export.numbers_csv(res).strip().splitlines()
    assert rows[0].startswith("panel,alpha,beta,loss")
    assert len(rows) == 1 + len(res.panels) * res.loss.shape[1] * res.loss.shape[2]
    panel, a, b, loss = rows[1].split(",")[:4]
    assert float(loss) == res.loss[0, 0, 0] and panel == "none"


def test_zip_bundle_and_default_figures(curves):
    spec, res = curves
    data = export.bundle_zip(res, formats=("html", "csv", "npz"), spec=spec)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert {"curves_loss.html", "curves_accuracy.html", "numbers.csv", "reproduce.json"} <= set(names)


def test_figures_are_labelled(surface, curves):
    _, s = surface
    _, c = curves
    f1 = figures.fig1_figure(s)
    texts = [t.text for t in f1.data if getattr(t, "mode", None) == "markers+text"]
    assert all(list(t) == ["SGD", "DAT-A", "DAT-B"] for t in texts) and len(texts) == 3
    assert f1.data[-2].colorbar.title.text.startswith("loss")
    cmp_ = figures.comparison_figure(s)
    assert [a.text for a in cmp_.layout.annotations][:3] == ["device-A", "device-B", "device-B − device-A"]
    # B - A where both losses are on the shared colour range, blank (NaN) where either is above it
    top = figures.colour_range(s.loss[1:3], s.marker_loss[1:3])[1]
    on_scale = np.maximum(s.loss[1], s.loss[2]) <= top
    np.testing.assert_allclose(np.asarray(cmp_.data[2].z, dtype=float),
                               np.where(on_scale, s.loss[2] - s.loss[1], np.nan).T)
    fc = figures.curves_figure(c)
    assert fc.layout.xaxis.title.text.startswith("α")
    assert figures.surface_figure(s, "device-B", "surface3d").data[0].type == "surface"
    with pytest.raises(ValueError, match="panel must be"):
        figures.surface_figure(s, "device-C")


def test_missing_browser_says_how_to_install(monkeypatch, surface, tmp_path):
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-browser"))
    with pytest.raises(export.BrowserNotFoundError, match="BROWSER_PATH"):
        export.export_bundle(surface[1], tmp_path, formats=("png",))
    monkeypatch.delenv("BROWSER_PATH")
    from choreographer.browsers.chromium import Chromium

    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **kw: None))
    with pytest.raises(export.BrowserNotFoundError, match="apt-get install chromium"):
        export.find_browser()


def test_basin_width_on_a_parabola():
    a = np.linspace(-2, 2, 41)
    left, right, censored = basin_width(a, a ** 2, 0.0, 1.0)  # g <= 1 on [-1, 1]
    assert (left, right, censored) == (pytest.approx(-1.0), pytest.approx(1.0), False)
    left, right, censored = basin_width(a, 0.1 * a ** 2, 0.0, 1.0)  # never leaves the basin on the grid
    assert (left, right, censored) == (-2.0, 2.0, True)


def test_summary_loss_increase_is_curve_at_typical_minus_clean(curves, surface):
    _, c = curves
    _, s = surface
    cmp_ = compare_devices(c, s)
    assert len(cmp_.rows) == len(c.models) * len(c.devices)
    row = cmp_.rows[1]
    i, j = c.models.index(row["model"]), c.devices.index(row["device"])
    assert row["loss_increase_at_typical"] == pytest.approx(float(np.mean(c.loss_at_typical[i, j] - c.clean_loss[i])))
    m = list(s.markers).index(row["model"])
    expect = s.marker_loss[s.panels.index(row["device"]), m] - s.marker_loss[0, m]
    assert row["surface_loss_increase"] == pytest.approx(expect)
    assert cmp_.to_csv().splitlines()[0].startswith("model,device,typical_norm")


def test_cli_2d_and_compare_write_bundles(trio_paths, tmp_path, capsys):
    base = ["--split", "test", "--max-samples", "60", "--draws", "2", "--quiet", "--cache-dir", str(tmp_path / "c")]
    trio = ["--sgd", trio_paths["SGD"], "--dat-a", trio_paths["DAT-A"], "--dat-b", trio_paths["DAT-B"]]
    assert cli_main(["landscape", "2d", *trio, "--resolution", "3", "3", "--formats", "none",
                     "--out", str(tmp_path / "s"), *base]) == 0
    assert (tmp_path / "s" / "reproduce.json").exists()
    assert cli_main(["landscape", "compare", *trio, "--resolution", "2", "2", "--num-alphas", "5",
                     "--formats", "none", "--out", str(tmp_path / "cmp"), *base]) == 0
    out = capsys.readouterr().out
    assert "loss_increase_at_typical" in out
    assert (tmp_path / "cmp" / "curves" / "summary.csv").exists()
    assert (tmp_path / "cmp" / "surface" / "numbers.npz").exists()
    assert cli_main(["landscape", "reproduce", str(tmp_path / "s" / "reproduce.json")]) == 0
    assert "largest absolute difference from the bundle's numbers 0" in capsys.readouterr().out
    assert cli_main(["landscape", "1d", "--checkpoint", f"SGD={trio_paths['SGD']}", "--num-alphas", "5",
                     "--formats", "none", "--out", str(tmp_path / "one"), *base]) == 0
    with pytest.raises(SystemExit):
        cli_main(["landscape", "2d", "--sgd", trio_paths["SGD"], "--out", str(tmp_path / "x")])
