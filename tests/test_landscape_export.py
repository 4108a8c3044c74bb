"""Figures, paper bundles, reproduction from the bundle's JSON, the summary numbers and the CLI."""

import io
import json
import re
from pathlib import Path
import xml.etree.ElementTree as ET
import zipfile

import numpy as np
import pytest

from landscape import export, figures
from faces.cli import main as cli_main
from landscape.spec import LandscapeSpec, run_spec
from landscape.summary import basin_width, compare_devices

SMALL = dict(dataset="digits", split="test", max_samples=80, batch_size=256)


@pytest.fixture(scope="module")
def trio_paths(tiny_trio):
    return tiny_trio


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


def test_exports_carry_dpi_and_vector_fills(surface, tmp_path):
    """PNGs say their dpi (they place at the print width); a 2D contour figure's PDF and SVG hold
    no images; a 3D figure's raster scene is listed in reproduce.json; SVG text has no zero-width
    characters."""
    from PIL import Image

    spec, res = surface
    figs = {"fig1": figures.fig1_figure(res), "compare": figures.comparison_figure(res),
            "s3d": figures.surface_figure(res, "device-A", "surface3d")}
    export.export_bundle(res, tmp_path, figures=figs, spec=spec, widths=("single", "slide"), dpi=200)
    for name in figs:
        for width, inches in (("single", 3.5), ("slide", 13.33)):
            with Image.open(tmp_path / f"{name}_{width}.png") as im:
                assert im.info["dpi"] == pytest.approx((200, 200), abs=0.01)
                assert im.width / im.info["dpi"][0] == pytest.approx(inches, abs=0.02)
    for name in ("fig1", "compare"):
        for width in ("single", "slide"):
            pdf = (tmp_path / f"{name}_{width}.pdf").read_bytes()
            assert b"/Subtype /Image" not in pdf and b"/Subtype/Image" not in pdf, name
            svg = (tmp_path / f"{name}_{width}.svg").read_text()
            assert "<image" not in svg and "\u200b" not in svg
    record = json.loads((tmp_path / "reproduce.json").read_text())
    raster = record["export"]["raster_in_vector_files"]
    assert set(raster) == {"s3d_single", "s3d_slide"} and "3D scene" in raster["s3d_single"][0]
    for width, inches in (("single", 3.5), ("slide", 13.33)):
        # the one image in the 3D PDF is the scene, at the size reproduce.json states; the page is
        # the print width (72 pt per inch)
        pdf = (tmp_path / f"s3d_{width}.pdf").read_bytes()
        said = re.search(r"image of (\d+) x (\d+) px", raster[f"s3d_{width}"][0]).groups()
        found = re.search(rb"/Subtype\s*/Image.*?/Width (\d+).*?/Height (\d+)|/Width (\d+).*?/Height (\d+)"
                          rb".*?/Subtype\s*/Image", pdf, re.S).groups()
        found = [int(v) for v in found if v is not None]
        assert [int(v) for v in said] == pytest.approx(found, abs=2)
        box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]*)\]", pdf).group(1).split()]
        assert box[2] == pytest.approx(inches * 72, abs=1)


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
    grid = len(res.panels) * res.loss.shape[1] * res.loss.shape[2]
    assert len(rows) == 1 + grid + len(res.panels) * len(res.markers)
    panel, a, b, loss = rows[1].split(",")[:4]
    assert float(loss) == res.loss[0, 0, 0] and panel == "none"


def test_csv_gives_every_model_point_with_its_standard_errors(surface):
    """The models' own points follow the grid, each Monte-Carlo number with SE = std / sqrt(draws)."""
    import csv as _csv

    spec, res = surface
    rows = list(_csv.DictReader(io.StringIO(export.numbers_csv(res))))
    models = [r for r in rows if r["point"] != "grid"]
    assert len(models) == len(res.panels) * len(res.markers)
    for r in models:
        p, m = res.panels.index(r["panel"]), list(res.markers).index(r["point"])
        assert (float(r["alpha"]), float(r["beta"])) == res.markers[r["point"]]
        assert float(r["loss"]) == res.marker_loss[p, m]
        expect = 0.0 if r["panel"] == "none" else res.marker_loss_std[p, m] / np.sqrt(spec.draws)
        assert float(r["loss_se"]) == pytest.approx(expect)
        expect = 0.0 if r["panel"] == "none" else res.marker_accuracy_std[p, m] / np.sqrt(spec.draws)
        assert float(r["accuracy_se"]) == pytest.approx(expect)
    noisy = [r for r in models if r["panel"] != "none"]
    assert any(float(r["loss_se"]) > 0 for r in noisy)
    grid = [r for r in rows if r["point"] == "grid" and r["panel"] != "none"][0]
    assert float(grid["loss_se"]) == pytest.approx(float(grid["loss_std"]) / np.sqrt(spec.draws))


def test_marker_hover_gives_each_model_loss_and_accuracy_with_their_se(surface):
    spec, res = surface
    fig = figures.fig1_figure(res)
    hovers = [t.hovertext for t in fig.data if t.name == "models"]
    p = res.panels.index("device-A")
    se = res.marker_loss_std[p, 0] / np.sqrt(spec.draws)
    text = hovers[p][0]
    assert text.startswith("SGD: α 0.00, β 0.00")
    assert f"loss {res.marker_loss[p, 0]:.3g} ± {se:.2g} nats" in text and "SE over 2 draws" in text
    assert "accuracy" in text and "±" not in hovers[0][0]  # the noise-free panel is one exact value


def test_zip_bundle_and_default_figures(curves):
    spec, res = curves
    data = export.zip_bytes(export.bundle_files(res, formats=("html", "csv", "npz"), spec=spec))
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert {"curves_loss.html", "curves_accuracy.html", "numbers.csv", "reproduce.json"} <= set(names)


def test_figures_are_labelled(surface, curves):
    _, s = surface
    _, c = curves
    f1 = figures.fig1_figure(s)
    labels = [a.text for a in f1.layout.annotations if (a.name or "").startswith("marker:")]
    assert labels == ["SGD", "DAT-A", "DAT-B"] * 3
    assert f1.data[-2].colorbar.title.text.startswith("loss")
    cmp_ = figures.comparison_figure(s)
    assert [a.text for a in cmp_.layout.annotations][:3] == ["device-A", "device-B", "device-B − device-A"]
    # B - A where both losses are on the basins' range, blank (NaN) where either is above it
    top = figures.colour_range(s.loss[1:3], s.marker_loss[1:3])[1]
    on_scale = np.maximum(s.loss[1], s.loss[2]) <= top
    diff = [t for t in cmp_.data if t.type == "contour"][2]
    np.testing.assert_allclose(np.asarray(diff.z, dtype=float), np.where(on_scale, s.loss[2] - s.loss[1], np.nan).T)
    fc = figures.curves_figure(c)
    assert fc.layout.xaxis.title.text is None and "α / r" in fc.layout.annotations[-1].text
    assert figures.surface_figure(s, "device-B", "surface3d").data[0].type == "surface"
    with pytest.raises(ValueError, match="panel must be"):
        figures.surface_figure(s, "device-C")


def test_loss_colours_are_log10_loss_on_one_scale_for_all_panels(surface):
    _, s = surface
    f1 = figures.fig1_figure(s)
    maps = [t for t in f1.data if t.type == "contour"]
    lo = min(s.loss.min(), s.marker_loss.min())
    hi = max(s.loss.max(), s.marker_loss.max())
    for p, t in enumerate(maps):
        assert (t.zmin, t.zmax) == pytest.approx((np.log10(lo), np.log10(hi)))
        np.testing.assert_allclose(np.asarray(t.z, dtype=float), np.log10(s.loss[p]).T)
        # the hover reads the loss itself and its standard error over the S draws
        custom = np.asarray(t.customdata, dtype=float)
        np.testing.assert_allclose(custom[..., 0], s.loss[p].T)
        np.testing.assert_allclose(custom[..., 1], s.loss_std[p].T / np.sqrt(2) if p else 0 * s.loss[p].T)
        assert t.contours.coloring == "fill"  # vector paths, not an embedded image
    # the colour bar's ticks are round numbers, placed at their log10
    cb = maps[-1].colorbar
    for val, text in zip(cb.tickvals, cb.ticktext):
        assert 10 ** val == pytest.approx(float(text))
        assert float(text) == float(f"{float(text):.3g}")  # round: 1-2-5 or short linear steps
    three_d = [figures.surface_figure(s, p, "surface3d").data[0] for p in s.panels]
    assert len({(t.cmin, t.cmax) for t in three_d}) == 1


def test_round_log_ticks():
    assert figures.round_log_ticks(0.0444, 5.82) == [0.05, 0.1, 0.2, 0.5, 1, 2, 5]
    assert figures.round_log_ticks(0.04, 292) == [0.1, 0.3, 1, 3, 10, 30, 100]
    assert figures.round_log_ticks(0.01, 1e5) == [0.01, 0.1, 1, 10, 100, 1000, 1e4, 1e5]
    assert figures.round_log_ticks(2.29, 2.41) == [2.3, 2.35, 2.4]
    assert figures.tick_text(1e5) == "10⁵" and figures.tick_text(3e4) == "3·10⁴" and figures.tick_text(0.2) == "0.2"
    scale = figures.loss_scale(np.array([0.01, 1e9]))
    assert scale.capped and scale.hi == pytest.approx(0.01 * 10 ** figures.MAX_DECADES)
    assert "≥" in scale.colorbar()["title"]["text"]


def test_curves_are_plotted_against_alpha_over_r_with_standard_errors(curves):
    _, c = curves
    fig = figures.curves_figure(c, names={"SGD": "SGD (20 epochs)"})
    means = [t for t in fig.data if t.mode == "lines" and t.hoverinfo != "skip"]
    assert [t.name for t in means if t.showlegend] == ["SGD (20 epochs)", "DAT-A", "DAT-B"]
    first = means[0]  # model 0 under device 0
    np.testing.assert_allclose(np.asarray(first.x), c.alphas[0] / c.typical_norm[0, 0])
    se = c.loss[0, 0].std(axis=0, ddof=1) / np.sqrt(c.loss.shape[2])
    np.testing.assert_allclose(np.asarray(first.customdata)[:, 1], se)
    assert "± %{customdata[1]" in first.hovertemplate and "nats" in first.hovertemplate
    at_r = [t for t in fig.data if t.mode == "markers"]
    assert all(list(t.x) == [1.0] for t in at_r)
    expect = c.loss_at_typical[0, 0].std(ddof=1) / np.sqrt(c.loss.shape[2])
    assert at_r[0].error_y.array[0] == pytest.approx(expect)
    # one x range for every panel; colours and dashes differ between models
    assert len({tuple(fig.layout[k].range) for k in fig.layout.to_plotly_json() if k.startswith("xaxis")}) == 1
    assert len({(t.line.color, t.line.dash) for t in means}) == len(c.models)


def test_summary_rows_carry_standard_errors_and_separation_says_when_draws_cannot_tell(curves):
    _, c = curves
    cmp_ = compare_devices(c)
    n = c.loss_at_typical.shape[2]
    for row in cmp_.rows:
        i, j = c.models.index(row["model"]), c.devices.index(row["device"])
        inc = c.loss_at_typical[i, j] - c.clean_loss[i]
        assert row["loss_increase_at_typical_se"] == pytest.approx(inc.std(ddof=1) / np.sqrt(n))
        assert row["draws"] == n
    pair = next(p for p in cmp_.separation if p["what"] == f"under {c.devices[0]}, DAT-A − SGD")
    d = c.loss_at_typical[1, 0] - c.loss_at_typical[0, 0] - (c.clean_loss[1] - c.clean_loss[0])
    assert pair["difference"] == pytest.approx(d.mean())
    assert pair["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(n))
    assert pair["separated"] == (abs(d.mean()) >= 2 * d.std(ddof=1) / np.sqrt(n))
    assert set(cmp_.warnings) == {p["message"] for p in cmp_.separation if not p["separated"]}


def test_separation_of_two_known_distributions():
    """Statistical fact: a true difference of 1 with per-draw std 1 is resolved at 2 SE with
    100 draws (SE 0.1) and the draws-needed estimate is about (2 sd / d)^2 = 4."""
    from landscape.results import Curves
    from landscape.summary import separation

    rng = np.random.default_rng(0)
    n = 100
    base = rng.normal(1.0, 1.0, n)
    lt = np.stack([base, base + 1.0 + rng.normal(0, 1.0, n)])[:, None, :]      # [M=2, D=1, n]
    curves = Curves(("m0", "m1"), ("dev",), np.zeros((1, 3)), np.zeros((2, 1, n, 3)), np.zeros((2, 1, n, 3)),
                    np.ones((2, 1)), lt, lt, np.zeros(2), np.zeros(2))
    (p,) = separation(curves)
    assert p["separated"] and p["se"] == pytest.approx(0.1, rel=0.2)
    assert 2 <= p["draws_needed"] <= 8
    same = Curves(("m0", "m1"), ("dev",), np.zeros((1, 3)), np.zeros((2, 1, 4, 3)), np.zeros((2, 1, 4, 3)),
                  np.ones((2, 1)), np.stack([base[:4], base[:4] + rng.normal(0, 1.0, 4)])[:, None, :],
                  np.zeros((2, 1, 4)), np.zeros(2), np.zeros(2))
    (q,) = separation(same)
    assert not q["separated"] and "cannot tell them apart" in q["message"]


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
    se = s.marker_loss_std[s.panels.index(row["device"]), m] / np.sqrt(2)
    assert row["surface_loss_increase_se"] == pytest.approx(se) and se > 0
    assert cmp_.to_csv().splitlines()[0].startswith("model,device,typical_norm")


def test_cli_2d_and_compare_write_bundles(trio_paths, tmp_path, capsys):
    base = ["--dataset", "digits", "--split", "test", "--max-samples", "60", "--draws", "2", "--quiet", "--cache-dir", str(tmp_path / "c")]
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


def test_export_panel_previews_the_exported_png(demo_workspace, tmp_path, monkeypatch):
    import shutil

    from streamlit.testing.v1 import AppTest

    root = tmp_path / "ws"
    shutil.copytree(demo_workspace, root)
    monkeypatch.setenv("DAT_WORKSPACE", str(root))
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    at = AppTest.from_file(app, default_timeout=300).run()
    at.switch_page("pages/4_Noise_curves.py").run()
    at.slider(key="curve_points").set_value(5)
    at.number_input(key="curve_draws").set_value(2)
    at.button(key="FormSubmitter:curves_form-Compute curves").click().run()
    from faces.dashboard import jobs

    for job in jobs.registry().active():  # the page runs the curves as a landscape job: wait for it
        if job.lane == jobs.LANDSCAPE_LANE:
            jobs.registry().wait(job.id, timeout=300)
    at.run()
    assert not at.exception and not at.error
    at.radio[1].set_value("single")
    at.multiselect[2].set_value(["png"])
    at.button(key="FormSubmitter:curves_export-Prepare figure files").click().run()
    assert not at.exception and not at.error, at.error
    images = at.get("image")
    assert len(images) == 1 and list(images[0].captions) == ["curves_loss_single.png"]
    assert "Preview at print size" in " ".join(m.value for m in at.markdown)
